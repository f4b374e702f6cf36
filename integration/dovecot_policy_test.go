//go:build integration

package integration

import (
	"context"
	"encoding/json"
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

	"github.com/mailgate/mailgate/integration/mailstack"
)

// The Dovecot side of docs/dovecot-policy.md: its conf block, used as it
// is with the placeholders filled in.
const (
	policyDoc     = "docs/dovecot-policy.md"
	policyDocAddr = "127.0.0.1:10026"
)

// docPolicyConf returns the ```conf block of docs/dovecot-policy.md with
// the test's mailgate address, secret and nonce in place of the doc's.
func docPolicyConf(t *testing.T, addr, secret, nonce string) string {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join(need(t).repo, policyDoc))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```conf\n(.*?)```").FindAllStringSubmatch(string(doc), -1)
	if len(m) != 1 {
		t.Fatalf("%s has %d conf blocks, want 1", policyDoc, len(m))
	}
	conf := m[0][1]
	for _, p := range []string{policyDocAddr, "X-API-Key:SECRET", "= NONCE"} {
		if !strings.Contains(conf, p) {
			t.Fatalf("%s's conf block lacks %q:\n%s", policyDoc, p, conf)
		}
	}
	return strings.NewReplacer(policyDocAddr, addr, "X-API-Key:SECRET", "X-API-Key:"+secret, "= NONCE", "= "+nonce).Replace(conf)
}

// policyStack is a Dovecot of its own whose auth_policy points at a
// mailgate adapter, and that mailgate (which has no listeners of its own
// that the test uses).
type policyStack struct {
	dovecot *mailstack.Stack
	m       *Mailgate
	cfg     *cfg
	// render is mailgate's config as launched (for Reload); secretFile
	// its adapters.dovecot.secret_file, secret what it and Dovecot hold.
	render             func() string
	secretFile, secret string
}

// startPolicyStack starts mailgate with adapters.dovecot and guardYAML
// (the guard: section), then a Dovecot configured with the doc's block.
// Clients log in to Dovecot directly from 127.0.0.x: 127.0.0.2 is RU
// (denied), the others GB (allowed), by mailgate's geo overrides.
func startPolicyStack(t *testing.T, guardYAML string) *policyStack {
	t.Helper()
	return startPolicyStackVia(t, guardYAML, nil)
}

// startPolicyStackVia is startPolicyStack with Dovecot calling the
// address via returns for mailgate's adapter address (nil: mailgate's).
func startPolicyStackVia(t *testing.T, guardYAML string, via func(mailgate string) string) *policyStack {
	t.Helper()
	need(t)
	dir := t.TempDir()
	secret := "it-dovecot-policy-secret-0123456789"
	secretFile := filepath.Join(dir, "policy.secret")
	if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := newCfg(t)
	var port int
	pick := func() {
		c.pickPorts(t)
		p, err := freePorts(1)
		if err != nil {
			t.Fatal(err)
		}
		port = p[0]
	}
	pick()
	db := filepath.Join(dir, "audit.db")
	render := func() string {
		c.Extra = fmt.Sprintf("adapters:\n  dovecot: {listen: %q, secret_file: %q}\naudit: {path: %q, batch_interval: 50ms}\n%s",
			addr(port), secretFile, db, guardYAML)
		return c.YAML()
	}
	m := launchRetrying(t, render, pick)
	// A Dovecot of its own: the shared one must not ask mailgate. Its
	// scratch directory is short (unix socket paths), under /tmp.
	sdir, err := os.MkdirTemp("/tmp", "mgp")
	if err != nil {
		t.Fatal(err)
	}
	// auth_debug: Dovecot logs each request's JSON, which the test reads.
	target := addr(port)
	if via != nil {
		target = via(target)
	}
	extra := docPolicyConf(t, target, secret, "it-nonce-4f2a") + "auth_debug = yes\n"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := mailstack.Start(ctx, mailstack.Options{Users: users, Dir: sdir, Name: "mailgate-policy", NoTLS: true,
		Verbose: true, Watchdog: true, DovecotExtra: extra})
	if st != nil {
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("policy Dovecot log:\n%s", st.DovecotLog())
			}
			st.Stop()
		})
	}
	if err != nil {
		t.Fatalf("policy Dovecot: %v", err)
	}
	return &policyStack{dovecot: st, m: m, cfg: c, render: render, secretFile: secretFile, secret: secret}
}

// waitDovecot waits until a line of the policy Dovecot's log contains
// every one of parts.
func waitDovecot(log func() string, parts ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), eventually)
	defer cancel()
	return mailstack.WaitLog(ctx, log, parts...)
}

// imapLoginScript logs in with Python's imaplib from a given source
// address and prints OK, or NO and the server's text.
const imapLoginScript = `
import imaplib, socket, sys, time
host, port, src, user, pw = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
class C(imaplib.IMAP4):
    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout, source_address=(src, 0))
c = C(host, port, timeout=60)
t = time.monotonic()
try:
    c.login(user, pw)
    print("OK %.2f" % (time.monotonic() - t))
    c.logout()
except imaplib.IMAP4.error as e:
    print("NO %.2f %s" % (time.monotonic() - t, e))
`

// login logs user in to the policy Dovecot's IMAP from src; it returns
// whether Dovecot let it in, the seconds the LOGIN took, and the text of
// a refusal.
func (p *policyStack) login(t *testing.T, src, user, pass string) (ok bool, secs float64, text string) {
	t.Helper()
	out, err := python(t, imapLoginScript, "127.0.0.1", fmt.Sprint(p.dovecot.IMAP), src, user, pass)
	if err != nil {
		t.Fatalf("imaplib from %s: %v\n%s", src, err, out)
	}
	f := strings.SplitN(strings.TrimSpace(out), " ", 3)
	if len(f) < 2 {
		t.Fatalf("imaplib printed %q", out)
	}
	fmt.Sscan(f[1], &secs)
	if len(f) == 3 {
		text = f[2]
	}
	return f[0] == "OK", secs, text
}

// TestDovecotPolicy runs the real Dovecot with the auth_policy settings
// of docs/dovecot-policy.md against mailgate's adapter: a correct login
// passes and is logged AUTHPASS; a denied country is refused by Dovecot
// itself with its ordinary failure; repeated wrong passwords are
// tarpitted (Dovecot waits the seconds mailgate says) and then refused,
// the right password too; Dovecot sends the attributes the adapter reads;
// a secret that differs is a refusal Dovecot acts on, and a reload takes
// the new one; with mailgate stopped Dovecot fails closed, as documented.
func TestDovecotPolicy(t *testing.T) {
	// Two distinct wrong passwords start the tarpit, the fourth for one
	// (login, address) refuses it; nothing is banned or locked.
	p := startPolicyStack(t, `guard:
  tarpit: {after: 2, step: 1s, max: 4s}
  lockout: {after: 50, per_ip_after: 4}
  ban: {ip_after: 50, network_after: 100}
  failure_penalty: {init: 0s}`)
	const user, pass = "alice@example.test", "alicepass"

	t.Run("correct password passes", func(t *testing.T) {
		if ok, _, text := p.login(t, "127.0.0.1", user, pass); !ok {
			t.Fatalf("refused: %s", text)
		}
		p.m.WaitLog(t, "msg=AUTHPASS")
		if !hasLine(p.m.Log(), "msg=AUTHPASS cid=", "proto=imap listener=dovecot-policy remote=127.0.0.1 event=AUTHPASS user=alice@example.test country=GB") {
			t.Fatalf("no AUTHPASS line in the proxy's form:\n%s", p.m.Log())
		}
	})

	var wrongText string
	t.Run("denied country refused by Dovecot", func(t *testing.T) {
		ok, _, text := p.login(t, ruLocal, user, pass)
		if ok {
			t.Fatal("a login from RU passed")
		}
		p.m.WaitLog(t, "msg=COUNTRYFAILED")
		if !hasLine(p.m.Log(), "msg=COUNTRYFAILED", "listener=dovecot-policy remote="+ruLocal+" event=COUNTRYFAILED", "country=RU") {
			t.Fatalf("no COUNTRYFAILED line for %s:\n%s", ruLocal, p.m.Log())
		}
		if err := waitDovecot(p.dovecot.DovecotLog, "Authentication failure due to policy server refusal"); err != nil {
			t.Fatal(err)
		}
		// The client sees Dovecot's ordinary failure, as for a wrong
		// password: nothing of the reason.
		_, _, wrongText = p.login(t, "127.0.0.17", "bob@example.test", wrongPass)
		if text != wrongText || !strings.Contains(text, "AUTHENTICATIONFAILED") {
			t.Fatalf("refusal %q differs from a wrong password's %q", text, wrongText)
		}
	})

	t.Run("wrong passwords tarpitted then refused", func(t *testing.T) {
		const src = "127.0.0.21"
		var tarpits []string
		for i := range 4 {
			ok, secs, _ := p.login(t, src, user, fmt.Sprintf("%s-%d", wrongPass, i))
			if ok {
				t.Fatalf("wrong password %d passed", i)
			}
			t.Logf("wrong password %d: %.2fs", i+1, secs)
			if i >= 2 {
				// Dovecot waits the tarpit before it checks the password.
				want := float64(i - 1)
				if secs < want {
					t.Errorf("wrong password %d took %.2fs; mailgate said tarpit %v s", i+1, secs, want)
				}
				tarpits = append(tarpits, fmt.Sprintf("tarpit=%d", i-1))
			}
		}
		for i, tp := range tarpits {
			if !hasLine(p.m.Log(), "dovecot policy: allowed", "remote="+src, tp) {
				t.Errorf("mailgate did not answer %s:\n%s", tp, p.m.Log())
			}
			// Dovecot took it as a tarpit (auth_debug).
			if !hasLine(p.dovecot.DovecotLog(), "policy(alice@example.test,"+src, fmt.Sprintf("Policy response %d", i+1)) {
				t.Errorf("Dovecot's log does not show the policy response %d", i+1)
			}
		}
		// The fourth distinct wrong password reached per_ip_after: now
		// even the right one is refused, by mailgate, before Dovecot
		// checks it.
		mark := len(p.m.Log())
		if ok, _, text := p.login(t, src, user, pass); ok || text != wrongText {
			t.Fatalf("right password after the refusals: ok=%v %q, want the ordinary failure", ok, text)
		}
		if !waitFor(func() bool { return hasLine(logSince(p.m.Log(), mark), "msg=AUTHFAILED", "remote="+src, "guard: ") }, eventually) {
			t.Fatalf("no guard refusal logged:\n%s", logSince(p.m.Log(), mark))
		}
	})

	t.Run("fail2ban finds the clients", func(t *testing.T) {
		// Every shipped or documented filter for mailgate's own log
		// lines, run by the real fail2ban-regex, finds each client that
		// failed, as often as it failed: the RU login, bob's wrong
		// password, and the four wrong passwords and the refusal above.
		f2b := fail2banRegex(t)
		want := map[string]int{ruLocal: 1, "127.0.0.17": 1, "127.0.0.21": 5}
		p.m.WaitCount(t, "remote=127.0.0.21 event=AUTHFAILED", 5)
		logPath := filepath.Join(t.TempDir(), "mail.log")
		if err := os.WriteFile(logPath, []byte(p.m.Log()), 0o600); err != nil {
			t.Fatal(err)
		}
		filters := shippedAndDocumentedFilters(t, need(t).repo, t.TempDir())
		n := 0
		for _, name := range slices.Sorted(maps.Keys(filters)) {
			if b, _ := os.ReadFile(filters[name]); !strings.Contains(string(b), "msg=") {
				continue // the legacy syslog lines' filters
			}
			n++
			got, ok := fail2banIPs(t, f2b, logPath, name, filters[name])
			if !ok {
				continue
			}
			if !maps.Equal(got, want) {
				t.Errorf("%s found %v, want %v", name, got, want)
			}
		}
		if n == 0 {
			t.Fatal("no filter for mailgate's log lines found")
		}
	})

	t.Run("audit rows", func(t *testing.T) {
		// The login history has each outcome, as the proxy records it,
		// from the adapter's listener.
		var rows []struct{ Result, Address, Listener string }
		want := map[string]string{"pass": "127.0.0.1", "denied": ruLocal, "failed": "127.0.0.21", "guard": "127.0.0.21"}
		got := map[string]string{}
		if !waitFor(func() bool {
			out, err := exec.Command(need(t).mailgateBin, "audit", "-config", p.m.cfgPath, user, "--json").CombinedOutput()
			if err != nil {
				t.Fatalf("mailgate audit: %v\n%s", err, out)
			}
			rows = nil
			json.Unmarshal(out, &rows)
			for _, r := range rows {
				if r.Listener == "dovecot-policy" {
					got[r.Result] = r.Address
				}
			}
			return maps.Equal(got, want)
		}, eventually) {
			t.Fatalf("audit rows of %s from dovecot-policy: %v, want %v (%+v)", user, got, want, rows)
		}
	})

	t.Run("Dovecot sends what the adapter reads", func(t *testing.T) {
		log := p.dovecot.DovecotLog()
		for _, want := range []*regexp.Regexp{
			regexp.MustCompile(`Policy server request JSON: \{"device_id":"[^"]*","login":"alice@example\.test","protocol":"imap","pwhash":"[0-9a-f]+","remote":"127\.0\.0\.1","session_id":"[^"]+","tls":false\}`),
			regexp.MustCompile(`Policy server request JSON: \{"device_id":"[^"]*","login":"alice@example\.test","protocol":"imap","pwhash":"[0-9a-f]+","remote":"127\.0\.0\.21","session_id":"[^"]+","success":false,"policy_reject":false,"tls":false\}`),
			regexp.MustCompile(`Policy server request JSON: \{[^}]*"remote":"127\.0\.0\.2",[^}]*"success":false,"policy_reject":true,`),
		} {
			if !want.MatchString(log) {
				t.Errorf("Dovecot's log has no request like %s", want)
			}
		}
		if strings.Contains(p.m.Log(), "invalid allow request") || strings.Contains(p.m.Log(), "invalid report request") {
			t.Errorf("mailgate found a request of the real Dovecot invalid:\n%s", p.m.Log())
		}
	})

	t.Run("a wrong secret refuses, a reload takes the new one", func(t *testing.T) {
		// mailgate's secret file changes and mailgate reloads, Dovecot
		// still sends the old secret: mailgate refuses with -1, which
		// Dovecot acts on (a 401 it would take as no opinion).
		const src = "127.0.0.31"
		if err := os.WriteFile(p.secretFile, []byte("it-rotated-policy-secret-9876543210\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if !p.m.Reload(t, p.render()) {
			t.Fatalf("reload refused:\n%s", p.m.Log())
		}
		p.m.WaitLog(t, "reload: adapters.dovecot uses the new secret from secret_file")
		mark := len(p.dovecot.DovecotLog())
		if ok, _, text := p.login(t, src, user, pass); ok || text != wrongText {
			t.Fatalf("right password while the secrets differ: ok=%v %q, want the ordinary failure", ok, text)
		}
		if err := waitDovecot(func() string { return p.dovecot.DovecotLog()[mark:] }, "policy("+user+","+src, "Authentication failure due to policy server refusal"); err != nil {
			t.Fatalf("Dovecot did not take mailgate's answer as a refusal: %v\n%s", err, p.dovecot.DovecotLog()[mark:])
		}
		if strings.Contains(p.dovecot.DovecotLog()[mark:], "Policy server HTTP error") {
			t.Errorf("mailgate answered a wrong secret with an HTTP error:\n%s", p.dovecot.DovecotLog()[mark:])
		}
		p.m.WaitLog(t, "adapter request refused: missing or wrong secret")
		// The secret Dovecot sends back in the file: the next reload
		// takes it, and the login passes.
		if err := os.WriteFile(p.secretFile, []byte(p.secret+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if !p.m.Reload(t, p.render()) {
			t.Fatalf("reload refused:\n%s", p.m.Log())
		}
		if ok, _, text := p.login(t, src, user, pass); !ok {
			t.Fatalf("right password with the secrets equal again: %s", text)
		}
	})

	t.Run("mailgate down fails closed", func(t *testing.T) {
		p.m.stop()
		mark := len(p.dovecot.DovecotLog())
		ok, _, text := p.login(t, "127.0.0.1", user, pass)
		if ok {
			t.Fatal("with mailgate stopped the right password passed; the page asks for auth_policy_reject_on_fail = yes, which refuses")
		}
		if text != wrongText {
			t.Errorf("refusal while mailgate is down %q differs from a wrong password's %q", text, wrongText)
		}
		if err := waitDovecot(func() string { return p.dovecot.DovecotLog()[mark:] }, "Policy server HTTP error"); err != nil {
			t.Fatal(err)
		}
	})
}
