package nginx

import (
	"bufio"
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailgate/mailgate/adapter"
	"github.com/mailgate/mailgate/audit"
	"github.com/mailgate/mailgate/backend"
	"github.com/mailgate/mailgate/geo"
	"github.com/mailgate/mailgate/guard"
	"github.com/mailgate/mailgate/policy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// fakeIMAP is a loopback IMAP server that knows one password: enough for
// backend.IMAP.Verify (greeting, LOGIN, LOGOUT). It counts logins.
type fakeIMAP struct {
	ln     net.Listener
	mu     sync.Mutex
	logins int
}

func startIMAP(t *testing.T) *fakeIMAP {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeIMAP{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go f.serve(c)
		}
	}()
	return f
}

func (f *fakeIMAP) serve(c net.Conn) {
	defer c.Close()
	c.Write([]byte("* OK [CAPABILITY IMAP4rev1] ready\r\n"))
	br := bufio.NewReader(c)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		tag, rest, _ := strings.Cut(strings.TrimRight(line, "\r\n"), " ")
		switch {
		case strings.HasPrefix(rest, "LOGIN "):
			f.mu.Lock()
			f.logins++
			f.mu.Unlock()
			if rest == `LOGIN "alice@example.test" "right+pass word"` {
				c.Write([]byte(tag + " OK logged in\r\n"))
			} else {
				c.Write([]byte(tag + " NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"))
			}
		case rest == "LOGOUT":
			c.Write([]byte("* BYE\r\n" + tag + " OK bye\r\n"))
			return
		default:
			c.Write([]byte(tag + " BAD unknown\r\n"))
		}
	}
}

func (f *fakeIMAP) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.logins
}

// countries places 127.0.0.1 in GB (allowed) and 127.0.0.2 in RU.
type countries struct{}

func (countries) Decide(r policy.Request) policy.Decision {
	if r.Addr == netip.MustParseAddr("127.0.0.2") {
		return policy.Decision{Rule: "policy.allow_countries", Reason: "country not allowed",
			Location: geo.Location{Country: "RU", Name: "Russia"}}
	}
	return policy.Decision{Allow: true, Rule: "policy.allow_countries", Reason: "country allowed",
		Location: geo.Location{Country: "GB", Name: "United Kingdom"}}
}

type auditLog struct {
	mu sync.Mutex
	ev []audit.Event
}

func (a *auditLog) Record(e audit.Event) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ev = append(a.ev, e)
}

// testAdapter is a Handler with a fake IMAP backend, a log buffer and a
// sleep that records the moments it was asked to wait for.
type testAdapter struct {
	h      *Handler
	imap   *fakeIMAP
	log    *bytes.Buffer
	logMu  *sync.Mutex
	audit  *auditLog
	reg    *prometheus.Registry
	mu     sync.Mutex
	sleeps []time.Duration // until-now at each wait
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func newTestAdapter(t *testing.T, g *guard.Guard) *testAdapter {
	t.Helper()
	ta := &testAdapter{imap: startIMAP(t), log: &bytes.Buffer{}, logMu: &sync.Mutex{}, audit: &auditLog{}, reg: prometheus.NewRegistry()}
	log := slog.New(slog.NewTextHandler(lockedWriter{ta.logMu, ta.log}, nil))
	imapAddr := ta.imap.ln.Addr().String()
	d := &Deps{
		Logger: log, Policy: countries{}, Guard: g, Audit: ta.audit,
		Servers: map[policy.Protocol]netip.AddrPort{
			policy.IMAP: netip.MustParseAddrPort("127.0.0.1:143"),
			policy.SMTP: netip.MustParseAddrPort("127.0.0.1:10587"),
		},
		IMAP:         &backend.IMAP{Opts: backend.Options{Address: imapAddr, TLS: backend.TLSNone}},
		FailureDelay: 3 * time.Second,
		Timeout:      10 * time.Second,
		MaxAttempts:  3,
	}
	ta.h = New(d, NewMetrics(ta.reg))
	ta.h.sleep = func(_ context.Context, until time.Time) {
		ta.mu.Lock()
		ta.sleeps = append(ta.sleeps, time.Until(until))
		ta.mu.Unlock()
	}
	return ta
}

func (ta *testAdapter) logText() string {
	ta.logMu.Lock()
	defer ta.logMu.Unlock()
	return ta.log.String()
}

// ask sends one auth_http request as nginx does; hdr overrides or adds
// headers ("" deletes one).
func (ta *testAdapter) ask(hdr map[string]string) *httptest.ResponseRecorder {
	r := httptest.NewRequest("GET", "/auth", nil)
	for k, v := range map[string]string{
		"Auth-Method": "plain", "Auth-User": "alice%40example.test", "Auth-Pass": "right+pass%20word",
		"Auth-Protocol": "imap", "Auth-Login-Attempt": "1", "Client-IP": "127.0.0.1", "Client-Host": "[UNAVAILABLE]",
	} {
		r.Header.Set(k, v)
	}
	for k, v := range hdr {
		if v == "" {
			r.Header.Del(k)
		} else {
			r.Header.Set(k, v)
		}
	}
	w := httptest.NewRecorder()
	ta.h.ServeHTTP(w, r)
	return w
}

// The line the shipped fail2ban filter (docs/deploy/fail2ban/filter.d/
// mailgate.conf) reads, as a Go expression; the integration test runs the
// real fail2ban-regex.
var filterLine = regexp.MustCompile(`level=(?:INFO|WARN|ERROR) msg=(AUTHPASS|AUTHFAILED|COUNTRYFAILED) cid=[a-z2-7]+ proto=[a-z0-9]+ listener=nginx remote=(\S+) event=`)

func TestAllowedLoginSendsNginxToTheBackend(t *testing.T) {
	ta := newTestAdapter(t, nil)
	w := ta.ask(nil)
	if w.Code != 200 || w.Header().Get("Auth-Status") != "OK" || w.Header().Get("Auth-Server") != "127.0.0.1" ||
		w.Header().Get("Auth-Port") != "143" || w.Header().Get("Auth-Wait") != "" {
		t.Fatalf("answer %d %v", w.Code, w.Header())
	}
	if ta.imap.count() != 1 {
		t.Errorf("%d backend logins, want 1", ta.imap.count())
	}
	m := filterLine.FindStringSubmatch(ta.logText())
	if m == nil || m[1] != "AUTHPASS" || m[2] != "127.0.0.1" {
		t.Errorf("no AUTHPASS line in the proxy's format:\n%s", ta.logText())
	}
	if strings.Contains(ta.logText(), "right") {
		t.Errorf("the password reached the log:\n%s", ta.logText())
	}
	if len(ta.audit.ev) != 1 || ta.audit.ev[0].Result != audit.ResultPass || ta.audit.ev[0].Listener != "nginx" ||
		ta.audit.ev[0].Account != "alice@example.test" || ta.audit.ev[0].Mech != "PLAIN" {
		t.Errorf("audit %+v", ta.audit.ev)
	}
	if n := testutil.ToFloat64(ta.h.metrics.requests.WithLabelValues("imap", "pass")); n != 1 {
		t.Errorf("pass metric %v", n)
	}
}

// Every refusal after the checks answers the same words, held until the
// same floor, whatever its cause; only the log tells them apart.
func TestRefusalsLookAlike(t *testing.T) {
	ta := newTestAdapter(t, nil)
	cases := []struct {
		name, event, remote string
		hdr                 map[string]string
	}{
		{"wrong password", "AUTHFAILED", "127.0.0.1", map[string]string{"Auth-Pass": "wrong"}},
		{"denied country", "COUNTRYFAILED", "127.0.0.2", map[string]string{"Client-IP": "127.0.0.2"}},
		{"NUL in the name", "AUTHFAILED", "127.0.0.1", map[string]string{"Auth-User": "alice%00x"}},
		{"empty password", "AUTHFAILED", "127.0.0.1", map[string]string{"Auth-Pass": ""}},
	}
	for _, c := range cases {
		before := len(ta.logText())
		ta.sleeps = nil
		w := ta.ask(c.hdr)
		// The answer waited for the failure delay, counted from the
		// attempt's start (after any tarpit).
		if n := len(ta.sleeps); n == 0 || ta.sleeps[n-1] < 2*time.Second || ta.sleeps[n-1] > 3*time.Second {
			t.Errorf("%s: waits %v, want the last near 3s", c.name, ta.sleeps)
		}
		st := w.Header().Get("Auth-Status")
		if w.Code != 200 || !regexp.MustCompile(`^Invalid login or password \(id [a-z2-7]{12}\)$`).MatchString(st) ||
			w.Header().Get("Auth-Wait") != "1" || w.Header().Get("Auth-Server") != "" {
			t.Errorf("%s: answer %d %v", c.name, w.Code, w.Header())
		}
		m := filterLine.FindStringSubmatch(ta.logText()[before:])
		if m == nil || m[1] != c.event || m[2] != c.remote {
			t.Errorf("%s: want a %s line for %s:\n%s", c.name, c.event, c.remote, ta.logText()[before:])
		}
	}
	if ta.imap.count() != 1 {
		t.Errorf("%d backend logins, want 1 (only the wrong password reaches the backend)", ta.imap.count())
	}
}

func TestSMTPRefusalHasErrorCode(t *testing.T) {
	ta := newTestAdapter(t, nil)
	w := ta.ask(map[string]string{"Auth-Protocol": "smtp", "Auth-Pass": "wrong", "Auth-SMTP-Helo": "client", "Auth-SMTP-From": "MAIL FROM:<a@b>"})
	if w.Header().Get("Auth-Error-Code") != "535 5.7.8" || !strings.HasPrefix(w.Header().Get("Auth-Status"), "Invalid login or password") {
		t.Errorf("answer %v", w.Header())
	}
	w = ta.ask(map[string]string{"Auth-Protocol": "smtp"})
	if w.Header().Get("Auth-Status") != "OK" || w.Header().Get("Auth-Port") != "10587" || w.Header().Get("Auth-Error-Code") != "" {
		t.Errorf("answer %v", w.Header())
	}
}

// The attempt that reaches limits.max_login_attempts is answered without
// Auth-Wait: nginx then closes the session (its documented advice).
func TestLastAttemptEndsTheSession(t *testing.T) {
	ta := newTestAdapter(t, nil)
	if w := ta.ask(map[string]string{"Auth-Pass": "wrong", "Auth-Login-Attempt": "2"}); w.Header().Get("Auth-Wait") != "1" {
		t.Errorf("attempt 2: %v", w.Header())
	}
	if w := ta.ask(map[string]string{"Auth-Pass": "wrong", "Auth-Login-Attempt": "3"}); w.Header().Values("Auth-Wait") != nil {
		t.Errorf("attempt 3: %v", w.Header())
	}
}

// A request nginx would not send is no decision: 400, a clear log line,
// nothing a fail2ban filter counts, no backend contact.
func TestBadRequestsAreNoDecision(t *testing.T) {
	ta := newTestAdapter(t, nil)
	for name, hdr := range map[string]map[string]string{
		"no Client-IP":       {"Client-IP": ""},
		"host name":          {"Client-IP": "client.example.org"},
		"zone":               {"Client-IP": "fe80::1%eth0"},
		"unknown protocol":   {"Auth-Protocol": "http"},
		"attempt zero":       {"Auth-Login-Attempt": "0"},
		"bad escape in name": {"Auth-User": "alice%zz"},
	} {
		w := ta.ask(hdr)
		if w.Code != http.StatusBadRequest || !strings.HasPrefix(w.Header().Get("Auth-Status"), "Temporary") {
			t.Errorf("%s: %d %v", name, w.Code, w.Header())
		}
	}
	if ta.imap.count() != 0 || filterLine.MatchString(ta.logText()) || len(ta.audit.ev) != 0 {
		t.Errorf("a bad request was judged:\n%s", ta.logText())
	}
	if !strings.Contains(ta.logText(), `Client-IP \"client.example.org\" is not an IP address`) {
		t.Errorf("no clear log line:\n%s", ta.logText())
	}
	if n := testutil.ToFloat64(ta.h.metrics.requests.WithLabelValues("", "bad_request")) +
		testutil.ToFloat64(ta.h.metrics.requests.WithLabelValues("imap", "bad_request")); n != 6 {
		t.Errorf("bad_request metric %v", n)
	}
}

// cram-md5, apop and external carry no password mailgate can check: a
// refusal that reaches neither policy nor backend, and says why in the log.
func TestUnsupportedMethodIsRefused(t *testing.T) {
	ta := newTestAdapter(t, nil)
	w := ta.ask(map[string]string{"Auth-Method": "cram-md5", "Auth-Salt": "<1.2@x>"})
	if w.Code != 200 || !strings.HasPrefix(w.Header().Get("Auth-Status"), "Invalid login or password") {
		t.Errorf("answer %d %v", w.Code, w.Header())
	}
	if ta.imap.count() != 0 || !strings.Contains(ta.logText(), "only plain and login carry a password") {
		t.Errorf("log:\n%s", ta.logText())
	}
}

// The guard sees every attempt: wrong passwords lock the login out of an
// unknown address, and the lockout is logged as AUTHLOCKED, which the
// filters do not count against the address.
func TestGuardApplies(t *testing.T) {
	c := guard.Defaults()
	c.Lockout.After = 2
	c.Tarpit.After = 0
	g, err := guard.New(c, guard.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ta := newTestAdapter(t, g)
	for _, p := range []string{"wrong1", "wrong2"} {
		ta.ask(map[string]string{"Auth-Pass": p})
	}
	before := ta.imap.count()
	w := ta.ask(map[string]string{"Client-IP": "127.0.0.9"})
	if w.Header().Get("Auth-Status") == "OK" || ta.imap.count() != before {
		t.Errorf("locked login: %v, backend asked %d times", w.Header(), ta.imap.count()-before)
	}
	if !strings.Contains(ta.logText(), "msg=AUTHLOCKED") {
		t.Errorf("no AUTHLOCKED line:\n%s", ta.logText())
	}
}

func TestSecretIsRequired(t *testing.T) {
	ta := newTestAdapter(t, nil)
	sec := adapter.NewSecret(SecretHeader, "0123456789abcdef0123", slog.New(slog.DiscardHandler))
	h := Protect(func() *adapter.Secret { return sec }, ta.h, ta.h.metrics)
	r := httptest.NewRequest("GET", "/auth", nil)
	r.Header.Set("Auth-Method", "plain")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusUnauthorized {
		t.Errorf("without the secret: %d", w.Code)
	}
	if n := testutil.ToFloat64(ta.h.metrics.requests.WithLabelValues("", "unauthorized")); n != 1 {
		t.Errorf("unauthorized metric %v", n)
	}
	r.Header.Set(SecretHeader, "0123456789abcdef0123")
	w = httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusBadRequest { // the secret is right; the request is not
		t.Errorf("with the secret: %d", w.Code)
	}
}

func TestConfigValidate(t *testing.T) {
	base := adapter.Config{Listen: "127.0.0.1:9143", SecretFile: "/s"}
	for _, tc := range []struct {
		c    Config
		want string
	}{
		{Config{}, ""},
		{Config{Config: base}, ""},
		{Config{Config: base, Verify: "dovecot-auth", DovecotAuth: "/run/dovecot/auth-client"}, ""},
		{Config{Config: base, Verify: "dovecot-auth"}, "needs the auth socket"},
		{Config{Config: base, DovecotAuth: "/x"}, "verify is not dovecot-auth"},
		{Config{Config: base, Verify: "smtp-auth"}, "is not one of imap, dovecot-auth"},
		{Config{Config: adapter.Config{Listen: "0.0.0.0:9143", SecretFile: "/s"}}, "not a loopback"},
	} {
		err := tc.c.Validate("adapters.nginx")
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%+v: %v, want %q", tc.c, err, tc.want)
		}
	}
	if _, err := ServerFor("backends.imap", "mail.example.org:143"); err == nil || !strings.Contains(err.Error(), "takes no host name") {
		t.Errorf("host name: %v", err)
	}
	if ap, err := ServerFor("backends.imap", "[::ffff:127.0.0.1]:143"); err != nil || ap.String() != "127.0.0.1:143" {
		t.Errorf("mapped address: %v %v", ap, err)
	}
}

// An nginx that offers cram-md5 gets every login refused: one WARN line
// a minute says why, not one per login.
func TestUnsupportedMethodLogIsRateLimited(t *testing.T) {
	ta := newTestAdapter(t, nil)
	for range 5 {
		if w := ta.ask(map[string]string{"Auth-Method": "cram-md5", "Auth-Salt": "<1.2@x>"}); w.Code != 200 {
			t.Fatalf("answer %d %v", w.Code, w.Header())
		}
	}
	if n := strings.Count(ta.logText(), "only plain and login carry a password"); n != 1 {
		t.Errorf("%d WARN lines for 5 refusals within a minute, want 1:\n%s", n, ta.logText())
	}
	if n := testutil.ToFloat64(ta.h.metrics.requests.WithLabelValues("imap", "unsupported")); n != 5 {
		t.Errorf("unsupported metric %v, want 5 (every refusal counted)", n)
	}
}
