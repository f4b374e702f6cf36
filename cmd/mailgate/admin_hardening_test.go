package main

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/cmd/mailgate/internal/demo"
)

// Finding 9 of issue #14: an admin listener reachable from other hosts
// without a token, and a token file others can read, are errors unless
// admin.allow_insecure says otherwise.
func TestAdminInsecureConfigRefused(t *testing.T) {
	dir := t.TempDir()
	private := filepath.Join(dir, "private.token")
	open := filepath.Join(dir, "open.token")
	for f, mode := range map[string]os.FileMode{private: 0o600, open: 0o644} {
		if err := os.WriteFile(f, []byte("0123456789abcdef-token\n"), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(f, mode); err != nil { // whatever the umask
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		admin AdminConfig
		want  string // "" for no error
	}{
		{AdminConfig{Address: "127.0.0.1:9100"}, ""},
		{AdminConfig{Address: "127.0.0.2:9100"}, ""},
		{AdminConfig{Address: "[::1]:9100"}, ""},
		{AdminConfig{Address: "localhost:9100"}, ""},
		{AdminConfig{Address: "off"}, ""},
		{AdminConfig{Address: "10.0.0.21:9100", TokenFile: private}, ""},
		{AdminConfig{Address: "0.0.0.0:9100"}, "admin.address"},
		{AdminConfig{Address: ":9100"}, "admin.address"},
		{AdminConfig{Address: "[::]:9100"}, "admin.address"},
		{AdminConfig{Address: "mail.example.org:9100"}, "admin.address"},
		{AdminConfig{Address: "127.0.0.1:9100", TokenFile: open}, "chmod o-rwx"},
		{AdminConfig{Address: "0.0.0.0:9100", AllowInsecure: true}, ""},
		{AdminConfig{Address: "127.0.0.1:9100", TokenFile: open, AllowInsecure: true}, ""},
	} {
		c := &Config{Admin: tt.admin}
		c.applyOpsDefaults()
		err := c.validateOps()
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%+v: %v, want no error", tt.admin, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "admin.allow_insecure")):
			t.Errorf("%+v: err = %v, want %q and the allow_insecure hint", tt.admin, err, tt.want)
		}
	}
}

// Finding 9: a bad admin token is logged once per interval, not once per
// request; good tokens still work.
func TestAdminBadTokenLogRateLimited(t *testing.T) {
	// The gateway's own logger (the guard's API logs through it too).
	var logBuf syncBuf
	log := slog.New(slog.NewTextHandler(&logBuf, nil))
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	b, err := demo.Start(ctx, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	g, err := startGateway(opsConfig(b, b.IMAPAddr), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = g.shutdown(sctx)
	})
	e := &opsEnv{g: g, admin: newAdminServer(g, testAdminToken, nil)}
	h := e.admin.Handler()
	paths := []string{"/reload"}
	if e.g.guard != nil {
		paths = append(paths, "/guard/bans")
	}
	for i := range 50 {
		for _, p := range paths {
			req := httptest.NewRequest("POST", p, strings.NewReader("{}"))
			if i%2 == 0 {
				req.Header.Set("Authorization", "Bearer wrong-token-wrong-token")
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusUnauthorized {
				t.Fatalf("POST %s with a bad token = %d, want 401", p, rec.Code)
			}
		}
	}
	if n := strings.Count(logBuf.String(), "refused"); n != 1 {
		t.Errorf("%d WARN lines for 100 refused requests, want 1:\n%s", n, logBuf.String())
	}
	if e.g.guard != nil {
		req := httptest.NewRequest("GET", "/guard/bans", nil)
		req.Header.Set("Authorization", "Bearer "+testAdminToken)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			t.Errorf("GET /guard/bans with the token = %d %q", rec.Code, rec.Body)
		}
	}
}

// Finding 9: /readyz caches its result for every caller, so a caller
// that hung up must not leave a 503 (its cancelled dials) in the cache.
func TestReadyzIgnoresCallerHangingUp(t *testing.T) {
	e := startOpsEnv(t)
	h := e.admin.Handler()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil).WithContext(ctx))
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	if rec.Code != http.StatusOK {
		t.Errorf("/readyz after a caller hung up = %d %q, want 200", rec.Code, rec.Body)
	}
}

// check-config refuses the insecure admin listener too.
func TestCheckConfigRefusesOpenAdmin(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "mailgate.yaml")
	yaml := "hostname: mail.example.test\nlisteners: [{name: imap, protocol: imap, address: \"127.0.0.1:0\", tls: none}]\n" +
		"tls: {self_signed: true}\nadmin: {address: \"0.0.0.0:9100\"}\n"
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := runCheckConfig([]string{"-config", cfgPath}, &out, &errOut); code == 0 || !strings.Contains(errOut.String(), "admin.allow_insecure") {
		t.Errorf("check-config with an open admin listener = %d, stderr:\n%s", code, errOut.String())
	}
}
