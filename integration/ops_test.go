//go:build integration

package integration

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// udpSyslog is a loopback syslog receiver for mailgate's legacy lines.
type udpSyslog struct {
	pc    net.PacketConn
	lines chan string
}

func startUDPSyslog(t *testing.T) *udpSyslog {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	s := &udpSyslog{pc: pc, lines: make(chan string, 100)}
	go func() {
		buf := make([]byte, 8192)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			s.lines <- strings.TrimRight(string(buf[:n]), "\n")
		}
	}()
	return s
}

// next returns the next line containing substr, skipping others.
func (s *udpSyslog) next(t *testing.T, substr string) string {
	t.Helper()
	deadline := time.After(eventually)
	for {
		select {
		case l := <-s.lines:
			if strings.Contains(l, substr) {
				return l
			}
		case <-deadline:
			t.Fatalf("no syslog line with %q", substr)
		}
	}
}

// scrape fetches the admin listener's /metrics.
func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v", resp.StatusCode, err)
	}
	return string(b)
}

// atof reads a series value; absent counts as 0.
func atof(v string, ok bool) float64 {
	var f float64
	if ok {
		fmt.Sscan(v, &f)
	}
	return f
}

func series(body, name string) (string, bool) {
	for _, l := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			return v, true
		}
	}
	return "", false
}

// TestOpsMetricsAndFail2ban: after a scripted set of real IMAP logins
// against Dovecot, /metrics shows each result with its country, and the
// syslog lines of those logins, written to a file as a syslog daemon
// would, make the shipped fail2ban filter (run by the real fail2ban-regex)
// find exactly the clients that failed.
func TestOpsMetricsAndFail2ban(t *testing.T) {
	const user = "alice@example.test"
	const badAddr = "127.0.0.21" // GB by override; wrong password, this test only
	c := newCfg(t)
	// One port more than the listeners' in one call, so it differs from
	// theirs (separate calls may hand out a port again).
	ports, err := freePorts(9)
	if err != nil {
		t.Fatal(err)
	}
	mine := []int{c.IMAPS, c.IMAP, c.IMAPSLB, c.POP3S, c.POP3SLB, c.SMTPS, c.SMTPSLB, c.Submission}
	ports = slices.DeleteFunc(ports, func(p int) bool { return slices.Contains(mine, p) })
	admin := addr(ports[0])
	sl := startUDPSyslog(t)
	c.Extra = fmt.Sprintf("admin: {address: %q}\nsyslog: {enabled: true, address: %q}",
		admin, "udp:"+sl.pc.LocalAddr().String())
	m := startCfg(t, c)
	if !waitFor(func() bool { return accepting(admin) }, eventually) {
		t.Fatalf("admin listener %s never accepted; log:\n%s", admin, m.Log())
	}

	// The harness's start-up probes connected (and left without a TLS
	// handshake); the test counts from here.
	const connSeries = `mailgate_connections_total{listener="imaps",protocol="imap"}`
	const tlsSeries = `mailgate_tls_handshake_failures_total{listener="imaps"}`
	var before string
	if !waitFor(func() bool {
		before = scrape(t, admin)
		_, conn := series(before, connSeries)
		_, tls := series(before, tlsSeries)
		return conn && tls
	}, eventually) {
		t.Fatalf("the start-up probes never showed in /metrics (%s, %s):\n%s", connSeries, tlsSeries, before)
	}

	var syslogLines []string
	if r := imapLoginRaw(t, "", m.Addr["imaps"], "", user, users[user]); !strings.HasPrefix(r, "a1 OK") {
		t.Fatalf("allowed login = %q", r)
	}
	syslogLines = append(syslogLines, sl.next(t, "AUTHPASS"))
	if r := imapLoginRaw(t, ruLocal, m.Addr["imaps"], "", user, users[user]); !strings.HasPrefix(r, "a1 NO") {
		t.Fatalf("login from RU = %q", r)
	}
	syslogLines = append(syslogLines, sl.next(t, "COUNTRYFAILED"))
	if r := imapLoginRaw(t, badAddr, m.Addr["imaps"], "", user, wrongPass); !strings.HasPrefix(r, "a1 NO") {
		t.Fatalf("wrong password = %q", r)
	}
	syslogLines = append(syslogLines, sl.next(t, "AUTHFAILED"))

	for i, want := range []string{
		"NGINXMAILAUTH[", // tag as the PHP script used
		user + " : AUTHPASS|imap 127.0.0.1|GB|",
		user + " : COUNTRYFAILED|imap 127.0.0.2|RU|Russia",
		user + " : AUTHFAILED|imap 127.0.0.21|GB|",
	} {
		ok := true
		if i == 0 {
			for _, l := range syslogLines {
				ok = ok && strings.Contains(l, want)
			}
		} else {
			ok = strings.Contains(syslogLines[i-1], want)
		}
		if !ok {
			t.Errorf("syslog lines %q: want %q", syslogLines, want)
		}
	}

	body := scrape(t, admin)
	for name, want := range map[string]string{
		`mailgate_logins_total{country="GB",mechanism="LOGIN",protocol="imap",result="pass"}`:          "1",
		`mailgate_logins_total{country="GB",mechanism="LOGIN",protocol="imap",result="authfailed"}`:    "1",
		`mailgate_logins_total{country="RU",mechanism="LOGIN",protocol="imap",result="countryfailed"}`: "1",
		`mailgate_backend_login_duration_seconds_count{protocol="imap",result="ok"}`:                   "1",
		`mailgate_config_last_reload_successful`:                                                       "1",
	} {
		if got, ok := series(body, name); !ok || got != want {
			t.Errorf("%s = %q (present %v), want %s", name, got, ok, want)
		}
	}
	if n0, n1 := atof(series(before, connSeries)), atof(series(body, connSeries)); n1-n0 != 3 {
		t.Errorf("%s went from %v to %v, want 3 more", connSeries, n0, n1)
	}
	if f0, f1 := atof(series(before, tlsSeries)), atof(series(body, tlsSeries)); f1 != f0 {
		t.Errorf("TLS handshake failures went from %v to %v for good handshakes", f0, f1)
	}
	if strings.Contains(body, user) || strings.Contains(body, "127.0.0.") {
		t.Error("/metrics names a user or an address")
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get("http://" + admin + p)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s = %d %q", p, resp.StatusCode, b)
		}
	}

	f2b, err := exec.LookPath("fail2ban-regex")
	if err != nil {
		if inCI() {
			t.Fatal("fail2ban-regex not installed (Debian: apt-get install fail2ban); CI=true")
		}
		t.Skip("fail2ban-regex not installed (Debian: apt-get install fail2ban); metrics checked, filter not")
	}
	var file strings.Builder
	for _, l := range syslogLines {
		file.WriteString(l[strings.IndexByte(l, '>')+1:] + "\n") // drop <PRI> as syslog daemons do
	}
	logPath := filepath.Join(t.TempDir(), "mail.log")
	if err := os.WriteFile(logPath, []byte(file.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	hs := need(t)
	filter := filepath.Join(hs.repo, "docs", "deploy", "fail2ban", "filter.d", "mailgate.conf")
	out, err := exec.Command(f2b, "-o", "ip", logPath, filter).CombinedOutput()
	if err != nil {
		t.Fatalf("fail2ban-regex: %v\n%s", err, out)
	}
	got := strings.Fields(string(out))
	slices.Sort(got)
	if want := []string{ruLocal, badAddr}; !slices.Equal(got, want) {
		t.Errorf("fail2ban filter found %q, want %q in:\n%s", got, want, file.String())
	}
}

// TestReloadUnderLoad: while several spliced IMAP sessions keep issuing
// commands, mailgate is reloaded repeatedly, alternating the allowed
// countries and once with a broken config. No session sees an error, and
// after each reload a new login follows the policy then in force (the
// broken one changes nothing).
func TestReloadUnderLoad(t *testing.T) {
	const sessions = 4
	const user = "bob@example.test"
	c := newCfg(t)
	m := startCfg(t, c)

	stop := make(chan struct{})
	errs := make(chan error, sessions)
	counts := make([]int, sessions)
	for i := range sessions {
		s := imapDial(t, m.Addr["imaps"], true, user, users[user], nil)
		go func() {
			for {
				select {
				case <-stop:
					errs <- s.Logout().Wait()
					return
				default:
				}
				if err := s.Noop().Wait(); err != nil {
					errs <- fmt.Errorf("session %d after %d commands: %w", i, counts[i], err)
					return
				}
				counts[i]++
			}
		}()
	}

	login := func() string { return imapLoginRaw(t, "", m.Addr["imaps"], "", user, users[user]) }
	for round := range 3 {
		c.Allow = []string{"US"} // 127.0.0.1 is GB: denied
		if !m.Reload(t, c.YAML()) {
			t.Fatalf("round %d: valid config refused", round)
		}
		if r := login(); !strings.HasPrefix(r, "a1 NO") {
			t.Fatalf("round %d: login with GB denied = %q", round, r)
		}
		if m.Reload(t, "policy: {allow_countries: [GB]}\nlisteners: 7\n") {
			t.Fatalf("round %d: broken config accepted", round)
		}
		if r := login(); !strings.HasPrefix(r, "a1 NO") {
			t.Fatalf("round %d: after a broken reload, login = %q; the last good policy denies GB", round, r)
		}
		c.Allow = []string{"GB"}
		if !m.Reload(t, c.YAML()) {
			t.Fatalf("round %d: valid config refused", round)
		}
		if r := login(); !strings.HasPrefix(r, "a1 OK") {
			t.Fatalf("round %d: login with GB allowed = %q", round, r)
		}
	}
	close(stop)
	for range sessions {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	for i, n := range counts {
		if n == 0 {
			t.Errorf("session %d made no progress during the reloads", i)
		}
	}
}

// TestShutdownSaysGoodbye: on SIGTERM, sessions still logging in get the
// protocol's goodbye at once (IMAP "* BYE", POP3 "-ERR", SMTP "421")
// while a spliced session keeps working until it ends.
func TestShutdownSaysGoodbye(t *testing.T) {
	const user = "carol@example.test"
	c := newCfg(t)
	c.Extra = "drain_timeout: 60s"
	m := startCfg(t, c)
	spliced := imapDial(t, m.Addr["imaps"], true, user, users[user], nil)

	greeted := func(listener, greeting string) *lineConn {
		l := newLineConn(t, dialFrom(t, "", m.Addr[listener]))
		l.startTLS()
		if g := l.line(); !strings.HasPrefix(g, greeting) {
			t.Fatalf("%s greeting = %q", listener, g)
		}
		return l
	}
	imap := greeted("imaps", "* OK")
	pop3 := greeted("pop3s", "+OK")
	smtp := greeted("smtps", "220")

	if err := m.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, want string
		l          *lineConn
	}{{"imap", "* BYE", imap}, {"pop3", "-ERR", pop3}, {"smtp", "421", smtp}} {
		if got := tc.l.line(); !strings.HasPrefix(got, tc.want) {
			t.Errorf("%s pre-login session got %q on SIGTERM, want %s", tc.name, got, tc.want)
		}
	}
	if err := spliced.Noop().Wait(); err != nil {
		t.Fatalf("spliced session broke during the drain: %v", err)
	}
	if err := spliced.Logout().Wait(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-m.done:
	case <-time.After(30 * time.Second):
		t.Fatal("mailgate did not exit after the last session ended")
	}
}
