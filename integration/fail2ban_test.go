//go:build integration

package integration

import (
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// fail2banRegex returns the path of the real fail2ban-regex; a test
// without it is skipped, except in CI where it must be there.
func fail2banRegex(t *testing.T) string {
	t.Helper()
	f2b, err := exec.LookPath("fail2ban-regex")
	if err != nil {
		if inCI() {
			t.Fatal("fail2ban-regex not installed (Debian: apt-get install fail2ban); CI=true")
		}
		t.Skip("fail2ban-regex not installed (Debian: apt-get install fail2ban)")
	}
	return f2b
}

// fail2banIPs runs fail2ban-regex with filter (called name in messages)
// over logPath and counts the addresses it finds; ok is false (and the
// test marked failed) when fail2ban-regex itself failed.
func fail2banIPs(t *testing.T, f2b, logPath, name, filter string) (got map[string]int, ok bool) {
	t.Helper()
	out, err := exec.Command(f2b, "-o", "ip", logPath, filter).CombinedOutput()
	if err != nil {
		t.Errorf("%s: fail2ban-regex: %v\n%s", name, err, out)
		return nil, false
	}
	got = map[string]int{}
	for _, ip := range strings.Fields(string(out)) {
		got[ip]++
	}
	return got, true
}

// shippedAndDocumentedFilters writes every fail2ban filter mailgate ships
// (docs/deploy/fail2ban/filter.d) or shows in a docs page (an ini block
// with a failregex) to dir and returns their paths by name.
func shippedAndDocumentedFilters(t *testing.T, repo, dir string) map[string]string {
	t.Helper()
	filters := map[string]string{}
	shipped, err := filepath.Glob(filepath.Join(repo, "docs", "deploy", "fail2ban", "filter.d", "*.conf"))
	if err != nil || len(shipped) == 0 {
		t.Fatalf("no shipped filters (%v)", err)
	}
	for _, f := range shipped {
		filters["docs/deploy/fail2ban/filter.d/"+filepath.Base(f)] = f
	}
	pages, _ := filepath.Glob(filepath.Join(repo, "docs", "*.md"))
	block := regexp.MustCompile("(?s)```ini\n(.*?)```")
	for _, p := range pages {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for i, m := range block.FindAllStringSubmatch(string(b), -1) {
			if !strings.Contains(m[1], "failregex") {
				continue
			}
			f := filepath.Join(dir, fmt.Sprintf("%s-%d.conf", strings.TrimSuffix(filepath.Base(p), ".md"), i))
			if err := os.WriteFile(f, []byte(m[1]), 0o600); err != nil {
				t.Fatal(err)
			}
			filters[fmt.Sprintf("docs/%s (ini block %d)", filepath.Base(p), i)] = f
		}
	}
	return filters
}

// TestFail2banFiltersFindOnlyRealClients (issue #14, finding 4): clients
// send user names and IMAP IDs that imitate mailgate's fields and name
// 6.6.6.6, or hide in Unicode spaces and separators. Every shipped or
// documented fail2ban filter, run by the real fail2ban-regex over the real
// syslog lines and the real structured log of those logins, finds the
// real clients, each exactly as often as it failed, and nothing else.
func TestFail2banFiltersFindOnlyRealClients(t *testing.T) {
	f2b := fail2banRegex(t)
	hs := need(t)
	const (
		wrongPassAddr = "127.0.0.22" // GB by override: the backend refuses the password
		idOnlyAddr    = "127.0.0.23" // sends a hostile ID and logs out, never logs in
		frame         = "6.6.6.6"    // the address the clients try to get banned
	)
	hostile := []string{
		"msg=AUTHFAILED remote=" + frame,
		"x msg=AUTHFAILED cid=aaaaaaaaaaaa proto=imap listener=imaps remote=" + frame + " event=",
		"x : AUTHFAILED|imap " + frame + "|",
		"nbsp\u00a0: AUTHFAILED|imap " + frame + "|RU|x",
		"nel\u0085x : AUTHFAILED|imap " + frame + "|RU|x",
		"ls\u2028x : AUTHFAILED|imap " + frame + "|RU|x",
		"ideo\u3000x@example.test",
		`quote"x\y@example.test`,
		"pipe|x@example.test",
	}
	c := newCfg(t)
	sl := startUDPSyslog(t)
	// No tarpit, bans or lockouts: the test counts log lines, and a
	// guard event or delay is not what it is about.
	c.Extra = fmt.Sprintf(`syslog: {enabled: true, address: %q}
guard: {tarpit: {after: 0}, ban: {ip_after: 0, network_after: 0}, lockout: {after: 0, per_ip_after: 0}}`,
		"udp:"+sl.pc.LocalAddr().String())
	m := startCfg(t, c)

	want := map[string]int{}
	// Denied country (RU and CN behind the trusted balancer): one
	// COUNTRYFAILED per hostile name.
	for _, src := range []string{addrRU, addrCN} {
		for _, u := range hostile {
			if r := imapLoginRaw(t, "", m.Addr["imaps-lb"], src, u, "x"); !strings.HasPrefix(r, "a1 NO") {
				t.Fatalf("login %q from %s = %q, want NO", u, src, r)
			}
			want[src]++
		}
	}
	// A wrong password that reaches Dovecot, after a hostile ID.
	l := newLineConn(t, dialFrom(t, wrongPassAddr, m.Addr["imaps"]))
	l.startTLS()
	l.until("* OK")
	l.send(`a0 ID ("name" "msg=AUTHFAILED remote=` + frame + `" "version" "x : AUTHFAILED|imap ` + frame + "|\u2028\")\r\n")
	l.until("a0 OK")
	l.send("a1 LOGIN " + imapQuote("alice@example.test") + " " + imapQuote(wrongPass) + "\r\n")
	if r := l.until("a1 "); !strings.HasPrefix(r, "a1 NO") {
		t.Fatalf("wrong password = %q", r)
	}
	want[wrongPassAddr]++
	// A hostile ID and LOGOUT, no login at all: nothing to count.
	l = newLineConn(t, dialFrom(t, idOnlyAddr, m.Addr["imaps"]))
	l.startTLS()
	l.until("* OK")
	l.send(`a1 ID ("name" "msg=AUTHFAILED cid=aaaaaaaaaaaa proto=imap listener=imaps remote=` + frame + ` event=")` + "\r\na2 LOGOUT\r\n")
	l.until("a2 OK")
	// A name with a newline (SASL can carry one) is refused while the
	// response is decoded, before any login attempt: no line to count.
	if r := smtpDialog(t, "", m.Addr["smtps-lb"], addrCN, false).authPlain("x\nmsg=AUTHFAILED remote="+frame, "x"); !strings.HasPrefix(r, "501") {
		t.Fatalf("AUTH with a newline in the name = %q, want 501", r)
	}
	// A good login counts for nothing.
	if r := imapLoginRaw(t, "", m.Addr["imaps"], "", "alice@example.test", users["alice@example.test"]); !strings.HasPrefix(r, "a1 OK") {
		t.Fatalf("good login = %q", r)
	}

	failures := 0
	for _, n := range want {
		failures += n
	}
	var file strings.Builder
	// The legacy lines as a syslog daemon writes them (without <PRI>).
	for range failures {
		l := sl.next(t, "FAILED|")
		file.WriteString(l[strings.IndexByte(l, '>')+1:] + "\n")
	}
	// The structured lines as written to standard error.
	m.WaitLog(t, "session closed") // the ID-only session
	deadline := time.Now().Add(eventually)
	for strings.Count(m.Log(), "msg=AUTHFAILED ")+strings.Count(m.Log(), "msg=COUNTRYFAILED ") < failures {
		if time.Now().After(deadline) {
			t.Fatalf("want %d failure lines in the log:\n%s", failures, m.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	file.WriteString(m.Log())
	logPath := filepath.Join(t.TempDir(), "mail.log")
	if err := os.WriteFile(logPath, []byte(file.String()), 0o600); err != nil {
		t.Fatal(err)
	}

	filters := shippedAndDocumentedFilters(t, hs.repo, t.TempDir())
	for _, name := range slices.Sorted(maps.Keys(filters)) {
		got, ok := fail2banIPs(t, f2b, logPath, name, filters[name])
		if !ok {
			continue
		}
		if !maps.Equal(got, want) {
			t.Errorf("%s found %v, want %v", name, got, want)
		}
	}
	if t.Failed() {
		t.Logf("log given to fail2ban-regex:\n%s", file.String())
	}
}
