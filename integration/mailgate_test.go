//go:build integration

package integration

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mailgate/mailgate/integration/testport"
	"go.yaml.in/yaml/v3"
)

// Mailgate is one running mailgate process for one test.
type Mailgate struct {
	// Addr maps each listener name in the config to its address.
	Addr    map[string]string
	cmd     *exec.Cmd
	cfgPath string // the config file; Reload rewrites it
	log     *syncBuffer
	done    chan struct{} // closed when the process has exited
}

// syncBuffer collects the process's stderr while tests read it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// reportTail is how many of mailgate's last log lines a failed test
// prints; the whole log goes to a file the harness keeps.
const reportTail = 40

// report shows a failed test's mailgate log: the whole log in a file
// under the kept harness directory, and in the test output the race
// reports, the WARN and ERROR lines (at most 20 each kind) and the last
// reportTail lines, so the reason is not buried under a long run's
// INFO lines.
func (m *Mailgate) report(t testing.TB) {
	t.Helper()
	log := m.Log()
	lines := strings.Split(strings.TrimRight(log, "\n"), "\n")
	var b strings.Builder
	if h != nil && h.dir != "" {
		dir := filepath.Join(h.dir, "mailgate-logs")
		// The pid keeps apart the processes of one test (a restart, a
		// launch retried on a taken port).
		name := filepath.Join(dir, fmt.Sprintf("%s-%d.log", strings.NewReplacer("/", "_", " ", "_").Replace(t.Name()), m.cmd.Process.Pid))
		if err := os.MkdirAll(dir, 0o755); err == nil && os.WriteFile(name, []byte(log), 0o644) == nil {
			fmt.Fprintf(&b, "whole log (%d lines): %s\n", len(lines), name)
		}
	}
	if i := strings.Index(log, "WARNING: DATA RACE"); i >= 0 {
		end := strings.Index(log[i:], "\n==================")
		if end < 0 {
			end = min(len(log)-i, 8000)
		}
		fmt.Fprintf(&b, "first race report:\n%s\n", log[i:i+end])
	}
	for _, lvl := range []string{"level=ERROR", "level=WARN"} {
		n := 0
		for _, l := range lines {
			if strings.Contains(l, lvl) {
				if n++; n <= 20 {
					fmt.Fprintf(&b, "%s\n", l)
				}
			}
		}
		if n > 20 {
			fmt.Fprintf(&b, "(%d more %s lines)\n", n-20, lvl)
		}
	}
	fmt.Fprintf(&b, "last %d lines:\n%s", min(reportTail, len(lines)), strings.Join(lines[max(0, len(lines)-reportTail):], "\n"))
	t.Logf("mailgate log:\n%s", b.String())
}

// Log returns everything mailgate logged so far.
func (m *Mailgate) Log() string { return m.log.String() }

// WaitLog waits until mailgate's log contains substr.
func (m *Mailgate) WaitLog(t testing.TB, substr string) string {
	t.Helper()
	if !waitFor(func() bool { return strings.Contains(m.Log(), substr) }, eventually) {
		t.Fatalf("mailgate log never showed %q; log:\n%s", substr, m.Log())
	}
	return m.Log()
}

// WaitCount waits until mailgate's log contains substr at least n times.
func (m *Mailgate) WaitCount(t testing.TB, substr string, n int) {
	t.Helper()
	if !waitFor(func() bool { return strings.Count(m.Log(), substr) >= n }, eventually) {
		t.Fatalf("mailgate log shows %q %d times, want %d; log:\n%s", substr, strings.Count(m.Log(), substr), n, m.Log())
	}
}

// startMailgate picks a loopback port (freePorts), writes render(port) to
// a file, runs `mailgate serve -config` with it, waits until every
// listener accepts, and stops the process when the test ends. A process
// that exits early fails the test with its log; one that reports its
// port taken is started again on a new one (launchRetrying).
func startMailgate(t testing.TB, render func(port int) string) *Mailgate {
	t.Helper()
	var port int
	pick := func() {
		ports, err := freePorts(1)
		if err != nil {
			t.Fatal(err)
		}
		port = ports[0]
	}
	pick()
	return launchRetrying(t, func() string { return render(port) }, pick)
}

// startCfg is startMailgate for a cfg, on the ports newCfg picked; when
// mailgate reports one taken, it picks new ones and tries again.
func startCfg(t testing.TB, c *cfg) *Mailgate {
	t.Helper()
	return launchRetrying(t, c.YAML, func() { c.pickPorts(t) })
}

// launchRetrying launches mailgate with the config cfgYAML renders. Its
// ports come from freePorts: outside the kernel's ephemeral range, so no
// port-0 bind anywhere can take them, and never handed out twice, in this
// process or (through testport's lock file) another test process. Only a
// program outside the tests can have bound one first; when mailgate
// reports a port taken, repick chooses new ones for cfgYAML and it is
// launched again, testport.Attempts times in all.
func launchRetrying(t testing.TB, cfgYAML func() string, repick func()) *Mailgate {
	t.Helper()
	for attempt := 1; ; attempt++ {
		m, err := launch(t, cfgYAML())
		if err == nil {
			return m
		}
		if attempt < testport.Attempts && testport.InUse(err.Error()) {
			t.Logf("a port was taken (attempt %d of %d); picking new ones: %v", attempt, testport.Attempts, err)
			repick()
			continue
		}
		t.Fatal(err)
	}
}

// launch starts mailgate; see startMailgate.
func launch(t testing.TB, cfgYAML string) (*Mailgate, error) {
	t.Helper()
	hs := need(t)
	if hs.buildErr != nil {
		return nil, fmt.Errorf("mailgate binary unavailable: %w", hs.buildErr)
	}
	var cfg struct {
		Listeners []struct {
			Name    string `yaml:"name"`
			Address string `yaml:"address"`
		} `yaml:"listeners"`
	}
	if err := yaml.Unmarshal([]byte(cfgYAML), &cfg); err != nil {
		return nil, fmt.Errorf("test config does not parse: %w\n%s", err, cfgYAML)
	}
	cfgYAML = geoSection(cfgYAML, hs.geoDB)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "mailgate.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfgYAML), 0o600); err != nil {
		return nil, err
	}
	m := &Mailgate{Addr: map[string]string{}, log: &syncBuffer{}, done: make(chan struct{}), cfgPath: cfgPath}
	for _, l := range cfg.Listeners {
		m.Addr[l.Name] = l.Address
	}
	m.cmd = exec.Command(hs.mailgateBin, "serve", "-config", cfgPath)
	m.cmd.Stdout = m.log
	m.cmd.Stderr = m.log
	m.cmd.Dir = dir
	if err := m.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting mailgate: %w", err)
	}
	go func() {
		m.cmd.Wait()
		close(m.done)
	}()
	t.Cleanup(func() {
		m.stop()
		m.checkNoSecrets(t)
		if strings.Contains(m.Log(), "WARNING: DATA RACE") {
			t.Errorf("the race detector found a data race in mailgate (log below)")
		}
		if t.Failed() {
			m.report(t)
		}
	})
	for name, a := range m.Addr {
		ok := waitFor(func() bool {
			select {
			case <-m.done:
				return true
			default:
			}
			return m.listening(a) && accepting(a)
		}, eventually)
		select {
		case <-m.done:
			return nil, fmt.Errorf("mailgate exited during start-up (%v); log:\n%s\nconfig:\n%s", m.cmd.ProcessState, m.Log(), cfgYAML)
		default:
		}
		if !ok {
			m.stop()
			return nil, fmt.Errorf("mailgate listener %s (%s) never accepted; log:\n%s", name, a, m.Log())
		}
	}
	return m, nil
}

// checkNoSecrets fails the test if mailgate logged any password the tests
// use, plainly or base64-encoded as a SASL LOGIN or PLAIN response.
func (m *Mailgate) checkNoSecrets(t testing.TB) {
	t.Helper()
	log := m.Log()
	b64 := base64.StdEncoding.EncodeToString
	for user, pass := range users {
		for _, p := range []string{pass, wrongPass} {
			for _, secret := range []string{p, b64([]byte(p)), b64([]byte("\x00" + user + "\x00" + p))} {
				if strings.Contains(log, secret) {
					t.Errorf("mailgate logged a secret (%q) for %s", secret, user)
				}
			}
		}
	}
}

// Reload writes cfgYAML over the config file, sends SIGHUP and waits for
// mailgate to log the outcome; it reports whether the reload was taken.
func (m *Mailgate) Reload(t testing.TB, cfgYAML string) bool {
	t.Helper()
	cfgYAML = geoSection(cfgYAML, need(t).geoDB) // as launch wrote it
	if err := os.WriteFile(m.cfgPath, []byte(cfgYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	ok, failed := strings.Count(m.Log(), reloadOK), strings.Count(m.Log(), reloadFailed)
	if err := m.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !waitFor(func() bool {
		return strings.Count(m.Log(), reloadOK) > ok || strings.Count(m.Log(), reloadFailed) > failed
	}, eventually) {
		t.Fatalf("no reload outcome logged after SIGHUP; log:\n%s", m.Log())
	}
	return strings.Count(m.Log(), reloadOK) > ok
}

// What mailgate logs after SIGHUP (cmd/mailgate serve.go).
const (
	reloadOK     = "reload: new config"
	reloadFailed = "reload failed; previous config kept"
)

// stop sends SIGTERM, waits for a graceful exit, then kills.
func (m *Mailgate) stop() {
	select {
	case <-m.done:
		return
	default:
	}
	m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
	case <-time.After(15 * time.Second):
		m.cmd.Process.Kill()
		<-m.done
	}
}

// cfg describes a mailgate config for the tests; Config renders it.
type cfg struct {
	// Ports of mailgate's own listeners, chosen by newCfg (freePorts).
	IMAPS, IMAP, IMAPSLB, POP3S, POP3SLB, SMTPS, SMTPSLB, Submission int
	// Backend ports; default to the harness's Dovecot and Postfix.
	BackendIMAP, BackendPOP3, BackendSMTP int
	// Verify is the SMTP verification mode: "imap" or "smtp-auth".
	Verify string
	// Allow lists the allowed countries.
	Allow []string
	// Extra is appended as top-level YAML (e.g. "drain_timeout: 30s").
	Extra string
}

// newCfg picks ports (freePorts) for every listener and points the
// backends at the harness's daemons.
func newCfg(t testing.TB) *cfg {
	t.Helper()
	hs := need(t)
	c := &cfg{
		BackendIMAP: hs.imapPort, BackendPOP3: hs.pop3Port, BackendSMTP: hs.smtpPort,
		Verify: "imap", Allow: []string{"GB", "US"},
	}
	c.pickPorts(t)
	return c
}

// pickPorts chooses new ports (freePorts) for every listener.
func (c *cfg) pickPorts(t testing.TB) {
	t.Helper()
	p, err := freePorts(8)
	if err != nil {
		t.Fatal(err)
	}
	c.IMAPS, c.IMAP, c.IMAPSLB, c.POP3S, c.POP3SLB, c.SMTPS, c.SMTPSLB, c.Submission = p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]
}

// YAML renders the config in mailgate's format. 127.0.0.1 and
// 127.0.0.16/28 are GB and 127.0.0.2 is RU by override; the PROXY listeners trust 127.0.0.1.
func (c *cfg) YAML() string {
	return fmt.Sprintf(`hostname: mail.example.test
log: {level: debug, format: text}
listeners:
  - {name: imaps, protocol: imap, address: "127.0.0.1:%d", tls: implicit}
  - {name: imap, protocol: imap, address: "127.0.0.1:%d", tls: starttls, plaintext_from: []}
  - {name: imaps-lb, protocol: imap, address: "127.0.0.1:%d", tls: implicit, proxy_protocol_from: ["127.0.0.1/32"]}
  - {name: pop3s, protocol: pop3, address: "127.0.0.1:%d", tls: implicit}
  - {name: pop3s-lb, protocol: pop3, address: "127.0.0.1:%d", tls: implicit, proxy_protocol_from: ["127.0.0.1/32"]}
  - {name: smtps, protocol: smtp, address: "127.0.0.1:%d", tls: implicit}
  - {name: smtps-lb, protocol: smtp, address: "127.0.0.1:%d", tls: implicit, proxy_protocol_from: ["127.0.0.1/32"]}
  - {name: submission, protocol: smtp, address: "127.0.0.1:%d", tls: starttls}
backends:
  imap: {address: "127.0.0.1:%d", tls: none, forward_client: true}
  pop3: {address: "127.0.0.1:%d", tls: none, forward_client: true}
  smtp: {address: "127.0.0.1:%d", tls: none, verify: %s, xclient: true}
tls:
  self_signed: true
geo:
  overrides: {"127.0.0.1/32": GB, "127.0.0.2/32": RU, "127.0.0.16/28": GB}
policy:
  allow_countries: [%s]
limits: {auth_failure_delay: 100ms}
%s
`, c.IMAPS, c.IMAP, c.IMAPSLB, c.POP3S, c.POP3SLB, c.SMTPS, c.SMTPSLB, c.Submission,
		c.BackendIMAP, c.BackendPOP3, c.BackendSMTP, c.Verify, strings.Join(c.Allow, ", "), c.Extra)
}

// Addresses the PROXY header names (no traffic goes there), placed by the
// embedded geo data.
const (
	addrGB  = "81.2.69.142" // GB: allowed
	addrRU  = "77.88.55.88" // RU: denied
	addrCN  = "1.2.4.8"     // CN: denied
	ruLocal = "127.0.0.2"   // loopback address overridden to RU
	// Wrong-password attempts come from their own GB addresses, one per
	// test: Dovecot's auth penalty delays later logins from the same
	// forwarded address (2 s, doubling up to 15 s), which would slow other
	// tests and could outlast mailgate's backend timeout.
	badIMAP     = "127.0.0.17"
	badPOP3     = "127.0.0.18"
	badSMTP     = "127.0.0.19"
	badSMTPAuth = "127.0.0.20"

	// wrongPass is the wrong password the tests try; distinctive, so the
	// log check can look for it.
	wrongPass = "Wr0ng-Pa55word"
)

// replyID matches the opaque session id mailgate puts in error replies
// so support can find the log line: "(id jkpkfrti5xir)".
var replyID = regexp.MustCompile(`\(id ([0-9a-z]+)\)`)

// sameReply checks that replies are identical except for their session
// ids, and that each id names a session in mailgate's log.
func (m *Mailgate) sameReply(t testing.TB, what []string, replies ...string) {
	t.Helper()
	norm := func(r string) string { return replyID.ReplaceAllString(r, "(id *)") }
	for i, r := range replies {
		if norm(r) != norm(replies[0]) {
			var b strings.Builder
			for j := range replies {
				fmt.Fprintf(&b, "\n%s: %q", what[j], replies[j])
			}
			t.Fatalf("replies differ beyond the session id:%s", b.String())
		}
		if id := replyID.FindStringSubmatch(r); id != nil && !strings.Contains(m.Log(), id[1]) {
			t.Errorf("%s reply names session %s, which mailgate's log does not mention", what[i], id[1])
		}
	}
}

// proxyHeader is a PROXY v1 header for a client at src talking to the
// listener at dst.
func proxyHeader(src, dst string) string {
	_, dport, _ := net.SplitHostPort(dst)
	return fmt.Sprintf("PROXY TCP4 %s 127.0.0.1 40123 %s\r\n", src, dport)
}

// dialFrom dials addr from the local address laddr ("" for the default).
func dialFrom(t testing.TB, laddr, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if laddr != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(laddr)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, laddr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
