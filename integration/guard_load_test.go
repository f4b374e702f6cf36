//go:build integration

package integration

// Issue #14: the guard under attack and under legitimate load, through
// the real mailgate binary and the real Dovecot. Sources are claimed with
// PROXY v1 headers from a trusted loopback peer, as in attack_test.go.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// guardLoadConfig is a PROXY listener in front of Dovecot, GB and US
// allowed, the legitimate office network trusted; extra is appended to
// the guard section (indented two spaces) and more to the top level.
func guardLoadConfig(port int, extra, more string) string {
	hs := h
	return fmt.Sprintf(`hostname: mail.example.test
log: {level: info, format: text}
admin: {address: "off"}
listeners:
  - {name: imap-lb, protocol: imap, address: "127.0.0.1:%d", tls: none, proxy_protocol_from: ["127.0.0.1/32"], plaintext_from: ["0.0.0.0/0"]}
backends:
  imap: {address: "127.0.0.1:%d", tls: none, forward_client: true, timeout: 60s}
  pop3: {address: "127.0.0.1:%d", tls: none}
  smtp: {address: "127.0.0.1:%d", tls: none}
tls: {self_signed: true}
%s
guard:
  trusted_networks: [%s]
%s`, port, hs.imapPort, hs.pop3Port, hs.smtpPort, more, legitNet, extra)
}

// holdIdle opens a connection claiming src and keeps it open before login;
// it reports whether mailgate greeted it.
func holdIdle(t testing.TB, lb, src string) (net.Conn, bool) {
	c, err := net.DialTimeout("tcp", lb, 10*time.Second)
	if err != nil {
		t.Errorf("dial: %v", err)
		return nil, false
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, proxyHeader(src, lb)); err != nil {
		return c, false
	}
	g, err := bufio.NewReader(c).ReadString('\n')
	c.SetDeadline(time.Time{})
	return c, err == nil && strings.HasPrefix(g, "* OK")
}

// loginOK logs in once claiming src and reports the reply class.
func loginOK(lb, src, user string) string {
	r, greeted := imapAttempt(lb, src, []string{user}, []string{users[user]})
	switch {
	case !greeted:
		return "refused at accept"
	case len(r) != 1:
		return fmt.Sprintf("replies %v", r)
	}
	return r[0]
}

// TestGuardHeadroomUnderAttack (finding 5): attackers in several /24s
// holding the global pre-auth cap, or the backend login slots with slow
// wrong passwords, lock neither a trusted network nor a source with a
// recent successful login out.
func TestGuardHeadroomUnderAttack(t *testing.T) {
	need(t)
	src := pickSources(t, 1405, 8, netip.MustParsePrefix(legitNet), "GB", "US")
	proven := src["US"][7]
	t.Run("preauth", func(t *testing.T) {
		m := startMailgate(t, func(port int) string {
			return guardLoadConfig(port, "  connections: {max_preauth: 60, max_preauth_per_ip: 10}\n", "policy: {allow_countries: [GB, US]}")
		})
		lb := m.Addr["imap-lb"]
		if r := loginOK(lb, proven, "bob@example.test"); r != replyOK {
			t.Fatalf("proven source's first login: %s", r)
		}
		// Three /24s, two addresses each, ten idle connections each.
		held := 0
		for _, base := range src["GB"][:3] {
			a := netip.MustParseAddr(base).As4()
			for k := range 2 {
				a[3] = byte(10 + k)
				for range 10 {
					if _, ok := holdIdle(t, lb, netip.AddrFrom4(a).String()); ok {
						held++
					}
				}
			}
		}
		if held != 60 {
			t.Fatalf("attackers hold %d idle connections, want the 60 of max_preauth", held)
		}
		if _, ok := holdIdle(t, lb, src["GB"][4]); ok {
			t.Errorf("a new untrusted source was admitted past max_preauth")
		}
		if r := loginOK(lb, legitAddr, legitUser); r != replyOK {
			t.Errorf("trusted-network login with max_preauth held by attackers: %s", r)
		}
		if r := loginOK(lb, proven, "bob@example.test"); r != replyOK {
			t.Errorf("proven source's login with max_preauth held by attackers: %s", r)
		}
	})
	t.Run("backend", func(t *testing.T) {
		m := startMailgate(t, func(port int) string {
			return guardLoadConfig(port, "  backend: {queue_wait: 200ms}\n", "policy: {allow_countries: [GB, US]}")
		})
		lb := m.Addr["imap-lb"]
		if r := loginOK(lb, proven, "bob@example.test"); r != replyOK {
			t.Fatalf("proven source's first login: %s", r)
		}
		// 40 concurrent wrong passwords from 4 addresses, each for its own
		// login, hold backend slots for Dovecot's failure delay.
		var wg sync.WaitGroup
		for i := range 40 {
			a := src["GB"][4+i%4]
			wg.Go(func() {
				imapAttempt(lb, a, []string{fmt.Sprintf("ghost%d@example.test", i)}, []string{fmt.Sprintf("guess-%d", i)})
			})
		}
		time.Sleep(500 * time.Millisecond) // all at the backend
		var r1, r2 string
		var lw sync.WaitGroup
		lw.Go(func() { r1 = loginOK(lb, legitAddr, legitUser) })
		lw.Go(func() { r2 = loginOK(lb, proven, "bob@example.test") })
		lw.Wait()
		wg.Wait()
		if r1 != replyOK {
			t.Errorf("trusted-network login with the backend slots held by attackers: %s", r1)
		}
		if r2 != replyOK {
			t.Errorf("proven source's login with the backend slots held by attackers: %s", r2)
		}
	})
}

// TestBusySourceNeverRefused (finding 6): one untrusted address (a
// webmail host, an office behind NAT) with 64 and then 128 concurrent
// clients, each logging in correctly several times, the connection caps
// raised: no refusal, no ban.
func TestBusySourceNeverRefused(t *testing.T) {
	need(t)
	host := pickSources(t, 1406, 1, netip.MustParsePrefix(legitNet), "GB")["GB"][0]
	m := startMailgate(t, func(port int) string {
		return guardLoadConfig(port, `  connections: {max_per_ip: 1000, max_preauth_per_ip: 1000, max_per_network: 1000, max_preauth: 5000}
  backend: {queue: 1000, queue_wait: 60s}
`, "policy: {allow_countries: [GB, US]}\nlimits: {login_timeout: 2m}")
	})
	lb := m.Addr["imap-lb"]
	logins := sortedUsers()
	const rounds = 4
	for _, n := range []int{64, 128} {
		var mu sync.Mutex
		got := map[string]int{}
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				for k := range rounds {
					r := loginOK(lb, host, logins[(i+k)%len(logins)])
					mu.Lock()
					got[r]++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		t.Logf("%d concurrent clients x %d logins from %s: %v", n, rounds, host, got)
		if got[replyOK] != n*rounds {
			t.Errorf("%d concurrent clients: %v, want all %d ok", n, got, n*rounds)
		}
	}
	log := m.Log()
	if strings.Contains(log, "msg=BANNED") {
		t.Errorf("the busy source was banned:\n%s", grepLines(log, "msg=BANNED"))
	}
	if strings.Contains(log, `reason="guard: `) {
		t.Errorf("the guard refused logins of the busy source:\n%s", grepLines(log, `reason="guard: `))
	}
}

func grepLines(log, sub string) string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
			if len(out) == 5 {
				break
			}
		}
	}
	return strings.Join(out, "\n")
}

// TestFailureTimingSameSource (finding 8): from one address, a wrong
// password checked by Dovecot (whose penalty for the address grows with
// its failures) and a login the policy denies take the same time at the
// same point of the source's history. Two addresses alternate the kinds
// in opposite order at once, so at each step one sees a wrong password
// and the other a denial after the same number of failures.
func TestFailureTimingSameSource(t *testing.T) {
	if testing.Short() {
		t.Skip("the timing test takes about 45 s")
	}
	need(t)
	rules := filepath.Join(t.TempDir(), "rules.yaml")
	// carol may not log in from GB: her logins there are policy denials.
	if err := os.WriteFile(rules, []byte("rules:\n  - users: carol@example.test\n    deny: GB\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	m := startMailgate(t, func(port int) string {
		return guardLoadConfig(port, "", fmt.Sprintf("policy: {allow_countries: [GB, US], rules_file: %q}\nlimits: {auth_failure_delay: %s}", rules, timingDelay))
	})
	lb := m.Addr["imap-lb"]
	src := pickSources(t, 1408, 2, netip.MustParsePrefix(legitNet), "GB")["GB"]
	const steps = 4
	times := make([][steps]time.Duration, 2)
	kinds := make([][steps]string, 2)
	var wg sync.WaitGroup
	for s := range 2 {
		wg.Go(func() {
			for j := range steps {
				user, pass, kind := "alice@example.test", fmt.Sprintf("wrong-%d-%d", s, j), "wrong"
				if (j+s)%2 == 1 {
					// A fresh password each time, as for the wrong ones:
					// the tarpit counts distinct failures.
					user, pass, kind = "carol@example.test", fmt.Sprintf("denied-%d-%d", s, j), "denied"
				}
				d, r, err := timedLogin(lb, src[s], user, pass)
				if err != nil || !strings.Contains(r, "NO [AUTHENTICATIONFAILED]") {
					t.Errorf("source %d step %d (%s): %q %v", s, j, kind, r, err)
					return
				}
				times[s][j], kinds[s][j] = d, kind
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	for j := range steps {
		a, b := times[0][j], times[1][j]
		t.Logf("step %d: %s %v, %s %v", j, kinds[0][j], a.Round(time.Millisecond), kinds[1][j], b.Round(time.Millisecond))
		if d := (a - b).Abs(); d > time.Second {
			t.Errorf("step %d after %d failures: %s took %v and %s %v; want within 1s", j, j, kinds[0][j], a, kinds[1][j], b)
		}
		if min(a, b) < timingDelay {
			t.Errorf("step %d answered before limits.auth_failure_delay (%v): %v, %v", j, timingDelay, a, b)
		}
	}
}
