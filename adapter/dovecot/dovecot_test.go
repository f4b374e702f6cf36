package dovecot

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailgate/mailgate/audit"
	"github.com/mailgate/mailgate/geo"
	"github.com/mailgate/mailgate/guard"
	"github.com/mailgate/mailgate/internal/authlimit"
	"github.com/mailgate/mailgate/policy"
)

// What Dovecot 2.3.19 sent for a correct and a wrong password with the
// default auth_policy_request_attributes (captured from the real
// Dovecot; the integration test checks the same on every run).
const (
	dovecotAllow  = `{"device_id":"","login":"alice@example.test","protocol":"imap","pwhash":"0754","remote":"127.0.0.1","session_id":"RYPAcvphUpd/AAAB","tls":false}`
	dovecotReport = `{"device_id":"","login":"alice@example.test","protocol":"imap","pwhash":"0ba6","remote":"127.0.0.1","session_id":"HQnDcvphWpd/AAAB","success":false,"policy_reject":false,"tls":false}`
)

func TestParseRequestDovecot2319(t *testing.T) {
	r, err := parseRequest([]byte(dovecotAllow), false)
	if err != nil {
		t.Fatal(err)
	}
	want := request{Login: "alice@example.test", PWHash: "0754", Session: "RYPAcvphUpd/AAAB", Protocol: policy.IMAP,
		Service: "imap", Remote: netip.MustParseAddr("127.0.0.1")}
	if r != want {
		t.Fatalf("allow = %+v, want %+v", r, want)
	}
	r, err = parseRequest([]byte(dovecotReport), true)
	if err != nil || r.Success || r.PolicyReject || r.PWHash != "0ba6" {
		t.Fatalf("report = %+v, %v", r, err)
	}
	if _, err := parseRequest([]byte(dovecotAllow), true); err == nil {
		t.Fatal("a report without success and policy_reject parsed")
	}
}

func TestParseRequestRefuses(t *testing.T) {
	base := map[string]any{"login": "a@example.test", "protocol": "imap", "pwhash": "0abc", "remote": "192.0.2.1", "session_id": "s1"}
	for _, tc := range []struct {
		name     string
		key      string
		val      any // nil: delete the key
		badLogin bool
	}{
		{"no login", "login", nil, false},
		{"no pwhash", "pwhash", nil, false},
		{"no remote", "remote", nil, false},
		{"no session", "session_id", nil, false},
		{"unknown protocol", "protocol", "sieve", false},
		{"remote not an address", "remote", "mail.example.test", false},
		{"remote with zone", "remote", "fe80::1%eth0", false},
		{"pwhash not hex", "pwhash", "xyz", false},
		{"pwhash too long", "pwhash", strings.Repeat("0", 129), false},
		{"login an object", "login", map[string]any{"a": "b"}, false},
		{"login empty", "login", "", true},
		{"login with NUL", "login", "a\x00b", true},
		{"login with CRLF", "login", "a\r\nb", true},
		{"login too long", "login", strings.Repeat("a", 321), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := map[string]any{}
			for k, v := range base {
				m[k] = v
			}
			if tc.val == nil {
				delete(m, tc.key)
			} else {
				m[tc.key] = tc.val
			}
			b, _ := json.Marshal(m)
			r, err := parseRequest(b, false)
			if err == nil {
				t.Fatalf("%s parsed: %+v", b, r)
			}
			if got := isBadLogin(err); got != tc.badLogin {
				t.Fatalf("%s: errBadLogin = %v, want %v (%v)", b, got, tc.badLogin, err)
			}
			if tc.badLogin && r.Remote != netip.MustParseAddr("192.0.2.1") {
				t.Fatalf("a bad login lost the remote address: %+v", r)
			}
		})
	}
	for _, body := range []string{"", "null", "[]", `{"login":"a"} {}`, "\xff", strings.Repeat(" ", maxBody+1)} {
		if _, err := parseRequest([]byte(body), false); err == nil {
			t.Errorf("%q parsed", body)
		}
	}
}

func isBadLogin(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), errBadLogin.Error())
}

// FuzzParseRequest: any body is parsed or refused without a panic; what
// parses has a valid address, a known protocol, a hex hash and a login
// within the proxy's limits.
func FuzzParseRequest(f *testing.F) {
	f.Add([]byte(dovecotAllow), false)
	f.Add([]byte(dovecotReport), true)
	f.Fuzz(func(t *testing.T, body []byte, report bool) {
		r, err := parseRequest(body, report)
		if err != nil {
			return
		}
		if !r.Remote.IsValid() || r.Protocol == "" || r.PWHash == "" || authlimit.CheckUser(r.Login) != "" || r.Session == "" {
			t.Fatalf("parsed an unusable request %+v from %q", r, body)
		}
	})
}

// env is a handler with a real guard, a policy function and a log.
type env struct {
	h     *Handler
	g     *guard.Guard
	log   *syncBuf
	audit *auditRec
	now   time.Time
	mu    sync.Mutex
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

type auditRec struct {
	mu sync.Mutex
	ev []audit.Event
}

func (a *auditRec) Record(e audit.Event) { a.mu.Lock(); defer a.mu.Unlock(); a.ev = append(a.ev, e) }

type authFunc func(policy.Request) policy.Decision

func (f authFunc) Decide(r policy.Request) policy.Decision { return f(r) }

// ruAddr is placed in RU, which the test policy denies; every other
// address is GB, which it allows.
var ruAddr = netip.MustParseAddr("192.0.2.66")

func newEnv(t *testing.T, gc guard.Config, c Config) *env {
	t.Helper()
	e := &env{log: &syncBuf{}, audit: &auditRec{}, now: time.Now()}
	clock := func() time.Time { e.mu.Lock(); defer e.mu.Unlock(); return e.now }
	g, err := guard.New(gc, guard.Options{Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	e.g = g
	pol := authFunc(func(r policy.Request) policy.Decision {
		if r.Addr == ruAddr {
			return policy.Decision{Reason: "country not allowed", Rule: "policy.allow_countries", Location: geo.Location{Country: "RU"}}
		}
		return policy.Decision{Allow: true, Reason: "country allowed", Rule: "policy.allow_countries", Location: geo.Location{Country: "GB"}}
	})
	e.h = New(Options{
		Config: c, Logger: slog.New(slog.NewTextHandler(e.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Guard: g, Policy: func() Authorizer { return pol }, Auditor: e.audit, Now: clock,
	})
	return e
}

func (e *env) advance(d time.Duration) { e.mu.Lock(); e.now = e.now.Add(d); e.mu.Unlock() }

// body is a Dovecot request for login from remote with pwhash.
func body(login, remote, session, pwhash string) map[string]any {
	return map[string]any{"device_id": "", "login": login, "protocol": "imap", "pwhash": pwhash,
		"remote": remote, "session_id": session, "tls": false}
}

// post sends one request and returns the answer's status.
func (e *env) post(t *testing.T, command string, b map[string]any) int {
	t.Helper()
	raw, _ := json.Marshal(b)
	return e.postRaw(t, command, raw)
}

func (e *env) postRaw(t *testing.T, command string, raw []byte) int {
	t.Helper()
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, httptest.NewRequest("POST", "/?command="+command, bytes.NewReader(raw)))
	if rec.Code != http.StatusOK {
		t.Fatalf("%s: HTTP %d %s", command, rec.Code, rec.Body)
	}
	var ans struct {
		Status *int    `json:"status"`
		Msg    *string `json:"msg"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &ans); err != nil || ans.Status == nil || ans.Msg == nil {
		t.Fatalf("%s: answer %q is not {status, msg}", command, rec.Body)
	}
	if *ans.Msg != "" {
		t.Fatalf("%s: msg %q would reach the client", command, *ans.Msg)
	}
	return *ans.Status
}

// report sends the report of an attempt.
func (e *env) report(t *testing.T, b map[string]any, success, policyReject bool) {
	t.Helper()
	r := map[string]any{}
	for k, v := range b {
		r[k] = v
	}
	r["success"], r["policy_reject"] = success, policyReject
	e.post(t, "report", r)
}

// The fail2ban filter of docs/bruteforce.md, as a Go regexp.
var fail2ban = regexp.MustCompile(`(?m)^\s*(?:\S+ \S+: )?(?:time=\S* )?level=(?:INFO|WARN|ERROR)\smsg=(?:AUTHFAILED|COUNTRYFAILED) cid=[a-z2-7]+ proto=[a-z0-9]+ listener=(?:"[^"\\]*"|[^\s"]\S*) remote=(\S+) event=`)

func quiet() guard.Config {
	c := guard.Defaults()
	c.FailurePenalty = guard.PenaltyConfig{}
	return c
}

// A correct password: allow, the after-auth allow (which records the
// success), the report; one AUTHPASS line and audit row.
func TestAllowCorrectPassword(t *testing.T) {
	e := newEnv(t, quiet(), Config{})
	b := body("alice@example.test", "192.0.2.1", "S1", "0abc")
	for i := range 2 {
		if s := e.post(t, "allow", b); s != 0 {
			t.Fatalf("allow %d = %d, want 0", i+1, s)
		}
	}
	e.report(t, b, true, false)
	log := e.log.String()
	if n := strings.Count(log, "msg=AUTHPASS"); n != 1 {
		t.Fatalf("%d AUTHPASS lines, want 1:\n%s", n, log)
	}
	if !strings.Contains(log, "msg=AUTHPASS cid=") || !strings.Contains(log, "listener=dovecot-policy remote=192.0.2.1 event=AUTHPASS user=alice@example.test country=GB") {
		t.Fatalf("AUTHPASS line not in the proxy's form:\n%s", log)
	}
	if len(e.audit.ev) != 1 || e.audit.ev[0].Result != audit.ResultPass || e.audit.ev[0].Listener != Listener {
		t.Fatalf("audit rows %+v", e.audit.ev)
	}
	if e.h.park.len() != 0 {
		t.Fatalf("%d attempts still parked", e.h.park.len())
	}
}

// A denied country is refused at allow with COUNTRYFAILED, a line the
// fail2ban filter reads with the client's address.
func TestAllowDeniedCountry(t *testing.T) {
	e := newEnv(t, quiet(), Config{})
	b := body("alice@example.test", ruAddr.String(), "S1", "0abc")
	if s := e.post(t, "allow", b); s != -1 {
		t.Fatalf("allow from RU = %d, want -1", s)
	}
	e.report(t, b, false, true)
	m := fail2ban.FindAllStringSubmatch(e.log.String(), -1)
	if len(m) != 1 || m[0][1] != ruAddr.String() || !strings.Contains(m[0][0], "COUNTRYFAILED") {
		t.Fatalf("fail2ban matches %q in:\n%s", m, e.log.String())
	}
	if len(e.audit.ev) != 1 || e.audit.ev[0].Result != audit.ResultDenied {
		t.Fatalf("audit rows %+v", e.audit.ev)
	}
}

// Distinct wrong passwords from one address: after tarpit.after of them
// the answer is a tarpit (status N), and after lockout.per_ip_after the
// refusal; the same wrong password again counts once.
func TestWrongPasswordsTarpitThenRefuse(t *testing.T) {
	gc := quiet()
	gc.Tarpit = guard.TarpitConfig{After: 2, Step: time.Second, Max: 15 * time.Second}
	gc.Lockout.PerIPAfter = 4
	e := newEnv(t, gc, Config{})
	var got []int
	for i := range 6 {
		b := body("alice@example.test", "192.0.2.9", fmt.Sprintf("S%d", i), fmt.Sprintf("%04x", i))
		s := e.post(t, "allow", b)
		got = append(got, s)
		if s >= 0 {
			e.report(t, b, false, false)
			// The same password again: no new failure.
			b["session_id"] = fmt.Sprintf("R%d", i)
			if e.post(t, "allow", b) >= 0 {
				e.report(t, b, false, false)
			}
		} else {
			e.report(t, b, false, true)
		}
	}
	want := []int{0, 0, 1, 2, -1, -1}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("statuses %v, want %v\n%s", got, want, e.log.String())
	}
	if n := len(fail2ban.FindAllString(e.log.String(), -1)); n < 6 {
		t.Fatalf("%d fail2ban matches, want at least 6:\n%s", n, e.log.String())
	}
	// Another address with the right password is not refused.
	b := body("alice@example.test", "192.0.2.10", "T", "0fff")
	if s := e.post(t, "allow", b); s != 0 {
		t.Fatalf("the owner from elsewhere: %d, want 0", s)
	}
}

// An allow that never gets its report holds its reservation only for the
// lease; a full table ends its oldest attempt. Either way nothing is
// counted against anyone.
func TestUnreportedAttemptsExpire(t *testing.T) {
	gc := quiet()
	gc.Lockout.PerIPAfter = 1 // one attempt in flight holds the pair
	e := newEnv(t, gc, Config{Lease: 5 * time.Second, MaxParked: 3})
	b := body("alice@example.test", "192.0.2.20", "S1", "0001")
	if s := e.post(t, "allow", b); s != 0 {
		t.Fatal(s)
	}
	// While it is parked, another password for the pair waits for it,
	// then is refused without counting (beginWait).
	b2 := body("alice@example.test", "192.0.2.20", "S2", "0002")
	if s := e.post(t, "allow", b2); s != -1 {
		t.Fatalf("second attempt while the first is in flight: %d, want -1", s)
	}
	e.advance(6 * time.Second)
	e.h.abandon(e.h.park.expire(e.h.now()), "lease")
	if s := e.post(t, "allow", b2); s != 0 {
		t.Fatalf("after the lease: %d, want 0\n%s", s, e.log.String())
	}
	for i := range 4 {
		e.post(t, "allow", body(fmt.Sprintf("u%d@example.test", i), "192.0.2.30", "S", "0001"))
	}
	if n := e.h.park.len(); n != 3 {
		t.Fatalf("%d parked, want max_parked 3", n)
	}
	if strings.Contains(e.log.String(), "AUTHFAILED") {
		t.Fatalf("an unreported attempt was counted:\n%s", e.log.String())
	}
}

// Many sources guessing one login without ever reporting cannot keep its
// owner out: from a trusted network she is never held, and the lease
// frees an untrusted one.
func TestParkedGuessesDoNotLockOutTrusted(t *testing.T) {
	gc := quiet()
	gc.Lockout.After = 3
	gc.TrustedNetworks = []string{"198.51.100.0/24"}
	e := newEnv(t, gc, Config{})
	for i := range 5 {
		e.post(t, "allow", body("alice@example.test", fmt.Sprintf("203.0.113.%d", i+1), "S", fmt.Sprintf("%04x", i)))
	}
	b := body("alice@example.test", "198.51.100.7", "OWN", "0fff")
	start := time.Now()
	if s := e.post(t, "allow", b); s != 0 {
		t.Fatalf("owner from the trusted network: %d, want 0", s)
	}
	if d := time.Since(start); d >= beginWait {
		t.Fatalf("owner waited %v for the guesses in flight", d)
	}
}

// The same for a proven owner: once she logged in from a network, the
// guesses parked on her login from elsewhere do not hold her there.
func TestParkedGuessesDoNotLockOutProven(t *testing.T) {
	gc := quiet()
	gc.Lockout.After = 3
	e := newEnv(t, gc, Config{})
	own := body("alice@example.test", "192.0.2.77", "OWN1", "0fff")
	e.post(t, "allow", own)
	e.post(t, "allow", own)
	e.report(t, own, true, false)
	for i := range 5 {
		e.post(t, "allow", body("alice@example.test", fmt.Sprintf("203.0.113.%d", i+1), "S", fmt.Sprintf("%04x", i)))
	}
	// A stranger's network is held back by them (waits, then -1)...
	if s := e.post(t, "allow", body("alice@example.test", "198.18.0.1", "X", "0fff")); s != -1 {
		t.Fatalf("unknown network with 3 guesses in flight: %d, want -1", s)
	}
	// ...the owner's is not.
	start := time.Now()
	if s := e.post(t, "allow", body("alice@example.test", "192.0.2.78", "OWN2", "0fff")); s != 0 {
		t.Fatalf("owner from her network: %d, want 0", s)
	}
	if d := time.Since(start); d >= beginWait {
		t.Fatalf("owner waited %v for the guesses in flight", d)
	}
}

// Whatever is wrong with a request, Dovecot gets HTTP 200 and -1 to an
// allow (an HTTP error would make it accept), and a bad login is an
// AUTHFAILED line for fail2ban.
func TestInvalidAllowIsRefused(t *testing.T) {
	e := newEnv(t, quiet(), Config{})
	for _, raw := range []string{"", "{}", "not json", `{"login":"a","protocol":"imap","pwhash":"01","remote":"x","session_id":"s"}`} {
		if s := e.postRaw(t, "allow", []byte(raw)); s != -1 {
			t.Fatalf("allow %q = %d, want -1", raw, s)
		}
	}
	if s := e.post(t, "allow", body("a\r\nmsg=AUTHPASS", "192.0.2.40", "S", "01")); s != -1 {
		t.Fatalf("bad login: %d, want -1", s)
	}
	m := fail2ban.FindAllStringSubmatch(e.log.String(), -1)
	if len(m) != 1 || m[0][1] != "192.0.2.40" {
		t.Fatalf("fail2ban matches %q in:\n%s", m, e.log.String())
	}
	if strings.Contains(e.log.String(), "\nmsg=AUTHPASS") {
		t.Fatalf("the login split a log line:\n%s", e.log.String())
	}
}

// Run ends every parked attempt when its context ends.
func TestRunReleasesOnStop(t *testing.T) {
	e := newEnv(t, quiet(), Config{})
	e.post(t, "allow", body("alice@example.test", "192.0.2.50", "S", "01"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.h.Run(ctx); close(done) }()
	cancel()
	<-done
	if n := e.h.park.len(); n != 0 {
		t.Fatalf("%d still parked after Run returned", n)
	}
}
