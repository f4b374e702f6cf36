package adapter

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		c    Config
		want string // "" for valid
	}{
		{Config{}, ""},
		{Config{Listen: "127.0.0.1:9100", SecretFile: "s"}, ""},
		{Config{Listen: "[::1]:9100", SecretFile: "s"}, ""},
		{Config{Listen: "unix:/run/mailgate/nginx.sock", SecretFile: "s"}, ""},
		{Config{Listen: "0.0.0.0:9100", SecretFile: "s"}, "not a loopback address"},
		{Config{Listen: "192.0.2.1:9100", SecretFile: "s"}, "not a loopback address"},
		{Config{Listen: "localhost:9100", SecretFile: "s"}, "neither host:port"},
		{Config{Listen: "unix:", SecretFile: "s"}, "needs a socket path"},
		{Config{Listen: "127.0.0.1:9100"}, "adapters.x.secret_file: required"},
	} {
		err := tc.c.Validate("adapters.x")
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%+v: %v", tc.c, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%+v: got %v, want %q", tc.c, err, tc.want)
		}
	}
}

func TestReadSecret(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if s, err := ReadSecret("k", write("good", "  0123456789abcdef\n")); err != nil || s != "0123456789abcdef" {
		t.Errorf("good secret: %q, %v", s, err)
	}
	if _, err := ReadSecret("k", write("short", "short\n")); err == nil || !strings.Contains(err.Error(), "at least 16") {
		t.Errorf("short secret: %v", err)
	}
	if _, err := ReadSecret("k", write("two", "0123456789abcdef\nsecond line")); err == nil || !strings.Contains(err.Error(), "one line") {
		t.Errorf("two lines: %v", err)
	}
	if _, err := ReadSecret("k", filepath.Join(dir, "missing")); err == nil || !strings.HasPrefix(err.Error(), "k.secret_file:") {
		t.Errorf("missing file: %v", err)
	}
}

func TestListenUnixReplacesStaleSocket(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "a.sock")
	c := Config{Listen: "unix:" + sock}
	// A socket file left by a process that died.
	old, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	old.(*net.UnixListener).SetUnlinkOnClose(false)
	old.Close()
	ln, err := Listen(context.Background(), c)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	defer ln.Close()
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Perm() != 0o660 {
		t.Errorf("socket mode: %v, %v", fi.Mode(), err)
	}
	// A regular file is never removed.
	plain := filepath.Join(dir, "plain")
	os.WriteFile(plain, []byte("data"), 0o600)
	if _, err := Listen(context.Background(), Config{Listen: "unix:" + plain}); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("regular file: %v", err)
	}
	if b, _ := os.ReadFile(plain); string(b) != "data" {
		t.Error("regular file was touched")
	}
}

func TestSecretProtect(t *testing.T) {
	var logBuf bytes.Buffer
	s := NewSecret("X-Secret", "0123456789abcdef", slog.New(slog.NewTextHandler(&logBuf, nil)))
	h := s.Protect(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "in") }))
	for _, tc := range []struct {
		vals []string
		code int
	}{
		{[]string{"0123456789abcdef"}, 200},
		{nil, 401},
		{[]string{"0123456789abcdeF"}, 401},
		{[]string{"0123456789abcdef0"}, 401},
		{[]string{""}, 401},
		// Two headers: which one the caller meant is unclear, so neither.
		{[]string{"0123456789abcdef", "0123456789abcdef"}, 401},
	} {
		r := httptest.NewRequest("GET", "/x", nil)
		for _, v := range tc.vals {
			r.Header.Add("X-Secret", v)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != tc.code {
			t.Errorf("%q: got %d, want %d", tc.vals, w.Code, tc.code)
		}
	}
	// Five refusals within a minute: one log line.
	if n := strings.Count(logBuf.String(), "adapter request refused"); n != 1 {
		t.Errorf("refusal lines: %d, want 1:\n%s", n, logBuf.String())
	}
	if strings.Contains(logBuf.String(), "0123456789abcde") {
		t.Error("a secret (or a guess at it) reached the log")
	}
}

func TestServeStopsWithContext(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }), slog.New(slog.DiscardHandler), time.Second)
	}()
	resp, err := http.Get("http://" + ln.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "ok" {
		t.Fatalf("body %q", b)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
}
