package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// runHealthArgs runs `mailgate health` and returns its exit status and
// output.
func runHealthArgs(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(append([]string{"health"}, args...), strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

// TestHealthCommand: `mailgate health` against the real admin handler:
// 0 while ready, 1 with the reason once a backend is gone, 1 when
// nothing listens; -live asks /healthz.
func TestHealthCommand(t *testing.T) {
	e := startOpsEnv(t)
	var handler atomic.Value // http.Handler: the admin server of the moment
	handler.Store(e.admin.Handler())
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handler.Load().(http.Handler).ServeHTTP(w, r)
	}))
	defer srv.Close()

	if code, out, errs := runHealthArgs(t, "-url", srv.URL+"/readyz"); code != 0 || out != "ready\n" {
		t.Errorf("health while ready = %d %q %q, want 0 \"ready\"", code, out, errs)
	}
	e.pop3.Close()
	e.admin = newAdminServer(e.g, "", nil) // no cached readiness
	handler.Store(e.admin.Handler())
	code, out, errs := runHealthArgs(t, "-url", srv.URL+"/readyz")
	if code != 1 || !strings.Contains(out, "backends.pop3") || !strings.Contains(errs, "503") {
		t.Errorf("health with POP3 down = %d %q %q, want 1 naming backends.pop3", code, out, errs)
	}
	// The process still serves: liveness stays good.
	cfg := filepath.Join(t.TempDir(), "mailgate.yaml")
	if err := os.WriteFile(cfg, []byte("admin: {address: \""+srv.Listener.Addr().String()+"\"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, errs := runHealthArgs(t, "-config", cfg, "-live"); code != 0 || out != "ok\n" {
		t.Errorf("health -live = %d %q %q, want 0 \"ok\"", code, out, errs)
	}
	if code, _, _ := runHealthArgs(t, "-config", cfg); code != 1 {
		t.Errorf("health from the config's admin.address with POP3 down = %d, want 1", code)
	}
	srv.Close()
	if code, _, errs := runHealthArgs(t, "-config", cfg, "-live"); code != 1 || errs == "" {
		t.Errorf("health with nothing listening = %d %q, want 1 and a reason", code, errs)
	}
	if code, _, _ := runHealthArgs(t, "-config", filepath.Join(t.TempDir(), "missing.yaml")); code != 1 {
		t.Errorf("health with a missing config = %d, want 1", code)
	}
	if code, _, _ := runHealthArgs(t, "extra"); code != 2 {
		t.Errorf("health with an argument = %d, want 2", code)
	}
}

// TestHealthBaseURL: only admin.address is read, and a config broken
// elsewhere (mid-edit) still yields it.
func TestHealthBaseURL(t *testing.T) {
	for _, tc := range []struct{ config, want, err string }{
		{"", "http://127.0.0.1:9100", ""},
		{"hostname: x\n", "http://127.0.0.1:9100", ""},
		{"admin: {address: \"0.0.0.0:9200\"}\n", "http://127.0.0.1:9200", ""},
		{"admin: {address: \"[::]:9200\"}\n", "http://127.0.0.1:9200", ""},
		{"admin: {address: \"[::1]:9200\"}\n", "http://[::1]:9200", ""},
		{"admin: {address: \"10.0.0.21:9100\", token_file: /x}\nnot_a_key: 1\n", "http://10.0.0.21:9100", ""},
		// A type error in another section does not hide the address.
		{"listeners: 7\nadmin: {address: \"127.0.0.1:9300\"}\n", "http://127.0.0.1:9300", ""},
		{"admin: {address: \"off\"}\n", "", "off"},
		{"admin: {address: \"nonsense\"}\n", "", "nonsense"},
		{"admin: [\n", "", "config"},
	} {
		got, err := healthBaseURL([]byte(tc.config))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("healthBaseURL(%q) = %q, %v; want an error about %q", tc.config, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("healthBaseURL(%q) = %q, %v; want %q", tc.config, got, err, tc.want)
		}
	}
}

// TestHealthOutputIsBounded: a strange answer prints at most
// maxHealthLines short lines without control characters.
func TestHealthOutputIsBounded(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		for range 100 {
			w.Write([]byte(strings.Repeat("x", 500) + "\x1b[31m\n"))
		}
	}))
	defer srv.Close()
	code, out, _ := runHealthArgs(t, "-url", srv.URL)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if code != 1 || len(lines) != maxHealthLines {
		t.Fatalf("health = %d with %d lines, want 1 with %d", code, len(lines), maxHealthLines)
	}
	for _, l := range lines {
		if len(l) > 200 || strings.ContainsRune(l, 0x1b) {
			t.Fatalf("line not bounded or not cleaned: %q", l)
		}
	}
}

// FuzzHealthBaseURL: any config file yields a URL or an error, never a
// panic, and a URL is always http:// to a host and port.
func FuzzHealthBaseURL(f *testing.F) {
	f.Add([]byte("admin: {address: \"0.0.0.0:9200\"}\n"))
	f.Add([]byte("listeners: 7\nadmin: {address: \"127.0.0.1:9300\"}\n"))
	f.Add([]byte("admin: &a [*a]\n"))
	f.Fuzz(func(t *testing.T, config []byte) {
		u, err := healthBaseURL(config)
		if err == nil && !strings.HasPrefix(u, "http://") {
			t.Fatalf("healthBaseURL(%q) = %q", config, u)
		}
	})
}
