package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailgate/mailgate/backend"
	"github.com/mailgate/mailgate/cmd/mailgate/internal/admin"
	"github.com/mailgate/mailgate/cmd/mailgate/internal/demo"
	"github.com/mailgate/mailgate/geo"
	"github.com/mailgate/mailgate/internal/testwait"
	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/tlsconf"
)

// opsEnv is a running gateway in front of the demo's in-memory backends,
// with one plaintext IMAP listener on loopback.
type opsEnv struct {
	g     *gateway
	cfg   *Config
	imap  string       // mailgate's IMAP listener
	pop3  net.Listener // stand-in POP3 backend (accepts only)
	admin *admin.Server
}

func startOpsEnv(t *testing.T) *opsEnv {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	b, err := demo.Start(ctx, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	pop3, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pop3.Close() })
	cfg := opsConfig(b, pop3.Addr().String())
	g, err := startGateway(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = g.shutdown(sctx)
	})
	return &opsEnv{g: g, cfg: cfg, imap: g.lns[0].Addr().String(), pop3: pop3,
		admin: newAdminServer(g, testAdminToken, func() (*Config, error) { return opsConfig(b, pop3.Addr().String()), nil })}
}

// testAdminToken is the admin token of the tests' admin servers.
const testAdminToken = "0123456789abcdef-token"

// opsConfig: 127.0.0.1 is US (allowed), 127.0.0.2 is RU (denied).
func opsConfig(b *demo.Backends, pop3 string) *Config {
	cfg := &Config{
		Hostname: "mailgate.test",
		Listeners: []ListenerConfig{
			{Name: "imap", Protocol: "imap", Address: "127.0.0.1:0", TLS: "none", PlaintextFrom: []string{"127.0.0.0/8"}},
			{Name: "pop3", Protocol: "pop3", Address: "127.0.0.1:0", TLS: "none", PlaintextFrom: []string{"127.0.0.0/8"}},
		},
		Backends: BackendsConfig{
			IMAP: &BackendConfig{Options: backend.Options{Address: b.IMAPAddr}},
			POP3: &BackendConfig{Options: backend.Options{Address: pop3}},
			SMTP: &SMTPBackendConfig{BackendConfig: BackendConfig{Options: backend.Options{Address: b.SMTPAddr}}},
		},
		TLS:    tlsconf.Config{SelfSigned: true},
		Geo:    geo.Config{Overrides: map[string]string{"127.0.0.1/32": "US", "127.0.0.2/32": "RU"}, WatchInterval: -1},
		Policy: policy.Config{AllowCountries: []string{"US"}},
	}
	cfg.Limits.AuthFailureDelay = time.Millisecond
	cfg.applyDefaults()
	return cfg
}

// imapLogin logs in from local address from and returns the tagged reply.
func imapLogin(t *testing.T, addr, from, user, pass string) string {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	if l, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(l, "* OK") {
		t.Fatalf("greeting %q, %v", l, err)
	}
	fmt.Fprintf(c, "a LOGIN %s %s\r\n", user, pass)
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("login reply: %v", err)
		}
		if strings.HasPrefix(l, "a ") {
			if strings.HasPrefix(l, "a OK") {
				fmt.Fprintf(c, "b LOGOUT\r\n")
				io.Copy(io.Discard, br)
			}
			return l
		}
	}
}

func (e *opsEnv) get(t *testing.T, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	e.admin.Handler().ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	return rec.Code, rec.Body.String()
}

// wantSeries fails unless the exposition has a line "name{labels} value".
func wantSeries(t *testing.T, body, series, value string) {
	t.Helper()
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, series+" ") {
			if got := strings.TrimPrefix(l, series+" "); got != value {
				t.Errorf("%s = %s, want %s", series, got, value)
			}
			return
		}
	}
	t.Errorf("no series %s in /metrics", series)
}

func TestMetricsAfterScriptedLogins(t *testing.T) {
	e := startOpsEnv(t)
	if r := imapLogin(t, e.imap, "127.0.0.1", "alice@example.test", "alicepass"); !strings.HasPrefix(r, "a OK") {
		t.Fatalf("allowed login: %q", r)
	}
	if r := imapLogin(t, e.imap, "127.0.0.1", "alice@example.test", "wrong-password"); !strings.HasPrefix(r, "a NO") {
		t.Fatalf("wrong password: %q", r)
	}
	if r := imapLogin(t, e.imap, "127.0.0.2", "bob@example.test", "bobpass"); !strings.HasPrefix(r, "a NO") {
		t.Fatalf("login from RU: %q", r)
	}
	testwait.For(t, "sessions to end", func() bool { return e.g.srv.Sessions() == 0 })

	code, body := e.get(t, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d\n%s", code, body)
	}
	wantSeries(t, body, `mailgate_connections_total{listener="imap",protocol="imap"}`, "3")
	wantSeries(t, body, `mailgate_logins_total{country="US",mechanism="LOGIN",protocol="imap",result="pass"}`, "1")
	wantSeries(t, body, `mailgate_logins_total{country="US",mechanism="LOGIN",protocol="imap",result="authfailed"}`, "1")
	wantSeries(t, body, `mailgate_logins_total{country="RU",mechanism="LOGIN",protocol="imap",result="countryfailed"}`, "1")
	wantSeries(t, body, `mailgate_policy_decisions_total{country="US",result="allow",rule="policy.allow_countries"}`, "2")
	wantSeries(t, body, `mailgate_policy_decisions_total{country="RU",result="deny",rule="policy.allow_countries"}`, "1")
	wantSeries(t, body, `mailgate_backend_login_duration_seconds_count{protocol="imap",result="ok"}`, "1")
	wantSeries(t, body, `mailgate_backend_login_duration_seconds_count{protocol="imap",result="authfailed"}`, "1")
	wantSeries(t, body, `mailgate_spliced_sessions{protocol="imap"}`, "0")
	wantSeries(t, body, `mailgate_config_last_reload_successful`, "1")
	if !strings.Contains(body, `mailgate_geo_database_build_timestamp_seconds{database="embedded"`) {
		t.Error("no geo build date for the embedded database")
	}
	if !strings.Contains(body, "mailgate_certificate_expiry_timestamp_seconds{") {
		t.Error("no certificate expiry series")
	}
	for _, bad := range []string{"alice", "bob", "127.0.0.", "alicepass"} {
		if strings.Contains(body, bad) {
			t.Errorf("/metrics mentions %q", bad)
		}
	}
}

func TestReloadGaugeFollowsReloads(t *testing.T) {
	e := startOpsEnv(t)
	broken := func() (*Config, error) { return nil, errors.New("config: bad") }
	if err := e.g.reload(broken); err == nil {
		t.Fatal("broken reload succeeded")
	}
	_, body := e.get(t, "/metrics")
	wantSeries(t, body, "mailgate_config_last_reload_successful", "0")
	wantSeries(t, body, `mailgate_config_reloads_total{result="failure"}`, "1")
	// The old policy still works after the failed reload.
	if r := imapLogin(t, e.imap, "127.0.0.1", "alice@example.test", "alicepass"); !strings.HasPrefix(r, "a OK") {
		t.Fatalf("login after failed reload: %q", r)
	}

	// POST /reload needs the token; with it the reload succeeds.
	for _, tc := range []struct {
		auth string
		code int
	}{{"", http.StatusUnauthorized}, {"Bearer wrong", http.StatusUnauthorized}, {"Bearer " + testAdminToken, http.StatusOK}} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("POST", "/reload", nil)
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		e.admin.Handler().ServeHTTP(rec, req)
		if rec.Code != tc.code {
			t.Errorf("POST /reload with %q: %d, want %d (%s)", tc.auth, rec.Code, tc.code, rec.Body)
		}
	}
	_, body = e.get(t, "/metrics")
	wantSeries(t, body, "mailgate_config_last_reload_successful", "1")
	wantSeries(t, body, `mailgate_config_reloads_total{result="success"}`, "1")
	// Counters survived both reloads.
	wantSeries(t, body, `mailgate_logins_total{country="US",mechanism="LOGIN",protocol="imap",result="pass"}`, "1")
}

func TestHealthAndReadiness(t *testing.T) {
	e := startOpsEnv(t)
	if code, body := e.get(t, "/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz = %d %q", code, body)
	}
	if code, body := e.get(t, "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz with every backend up = %d %q", code, body)
	}
	// A backend that went away makes /readyz fail and name it (after
	// the cache, which a fresh admin server does not have).
	e.pop3.Close()
	e.admin = newAdminServer(e.g, "", nil)
	code, body := e.get(t, "/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "backends.pop3") {
		t.Errorf("/readyz with POP3 down = %d %q", code, body)
	}
	// Without a token file, POST /reload refuses every request, with
	// the answer of a wrong token.
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("POST", "/reload", nil)
	req.Header.Set("Authorization", "Bearer ")
	e.admin.Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusUnauthorized || rec.Header().Get("WWW-Authenticate") == "" {
		t.Errorf("POST /reload without token_file = %d %v, want 401 with WWW-Authenticate", rec.Code, rec.Header())
	}
}

func TestCheckReadyCertificates(t *testing.T) {
	now := time.Now()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := &Config{Listeners: []ListenerConfig{{Protocol: "imap", TLS: "implicit"}}, Backends: BackendsConfig{
		IMAP: &BackendConfig{Options: backend.Options{Address: ln.Addr().String()}},
		POP3: &BackendConfig{Options: backend.Options{Address: ln.Addr().String()}},
		SMTP: &SMTPBackendConfig{BackendConfig: BackendConfig{Options: backend.Options{Address: ln.Addr().String()}}},
	}}
	if errs := checkReady(context.Background(), cfg, map[string]time.Time{"a": now.Add(time.Hour)}, now); len(errs) != 0 {
		t.Errorf("valid certificate: %q", errs)
	}
	if errs := checkReady(context.Background(), cfg, map[string]time.Time{"a": now.Add(-time.Hour)}, now); len(errs) != 1 {
		t.Errorf("expired certificate only: %q, want one problem", errs)
	}
	cfg.Listeners[0].TLS = "none"
	if errs := checkReady(context.Background(), cfg, nil, now); len(errs) != 0 {
		t.Errorf("no TLS listener needs no certificate: %q", errs)
	}
	// A POP3 backend nobody listens for is not probed; one in use is.
	cfg.Backends.POP3.Address = closedAddr(t)
	if errs := checkReady(context.Background(), cfg, nil, now); len(errs) != 0 {
		t.Errorf("unused POP3 backend made /readyz fail: %q", errs)
	}
	cfg.Listeners = append(cfg.Listeners, ListenerConfig{Protocol: "pop3", TLS: "none"})
	if errs := checkReady(context.Background(), cfg, nil, now); len(errs) != 1 || !strings.Contains(errs[0], "backends.pop3") {
		t.Errorf("POP3 listener with its backend down: %q, want backends.pop3", errs)
	}
}

func TestAdminTokenFile(t *testing.T) {
	dir := t.TempDir()
	short := filepath.Join(dir, "short")
	os.WriteFile(short, []byte("abc\n"), 0o600)
	g := &gateway{log: slog.New(slog.DiscardHandler)}
	for _, tc := range []struct{ file, want string }{
		{filepath.Join(dir, "missing"), "admin.token_file"},
		{short, "at least 16"},
	} {
		_, err := startOps(g, AdminConfig{Address: "off", TokenFile: tc.file}, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("token file %s: err = %v, want %q", tc.file, err, tc.want)
		}
	}
}

func TestStaleGeoWarning(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		built  time.Time
		maxAge time.Duration
		want   bool
	}{
		{now.Add(-31 * 24 * time.Hour), 720 * time.Hour, true},
		{now.Add(-29 * 24 * time.Hour), 720 * time.Hour, false},
		{now.Add(-365 * 24 * time.Hour), 0, false}, // no limit
		{time.Time{}, 720 * time.Hour, false},      // unknown build date
	} {
		if got := isStale(tc.built, tc.maxAge, now); got != tc.want {
			t.Errorf("isStale(%v ago, %v) = %v, want %v", now.Sub(tc.built).Round(time.Hour), tc.maxAge, got, tc.want)
		}
	}
	// The embedded database (built months before this test data's use)
	// with a one-hour limit is reported, as a log line and as the gauge.
	e := startOpsEnv(t)
	var buf syncBuf
	st := e.g.current()
	st.cfg.GeoUpdate.MaxAge = time.Hour
	warnStaleGeo(slog.New(slog.NewTextHandler(&buf, nil)), st)
	if !strings.Contains(buf.String(), "embedded geo database is older than geo_update.max_age") {
		t.Errorf("no stale warning for the embedded database: %q", buf.String())
	}
	_, body := e.get(t, "/metrics")
	wantSeries(t, body, `mailgate_geo_database_stale{database="embedded"}`, "1")
}

// syncBuf is a bytes.Buffer safe for the logger's concurrent writes.
type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
