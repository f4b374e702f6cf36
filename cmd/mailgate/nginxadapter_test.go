package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/adapter"
	"github.com/mailgate/mailgate/adapter/nginx"
	"github.com/mailgate/mailgate/backend"
	"github.com/mailgate/mailgate/cmd/mailgate/internal/demo"
)

const testNginxSecret = "nginx-secret-0123456789"

// askNginx sends one auth_http request over the adapter's unix socket.
func askNginx(t *testing.T, sock, secret, user, pass, ip string) http.Header {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}}
	req, _ := http.NewRequest("GET", "http://nginx-adapter/auth", nil)
	for k, v := range map[string]string{"Auth-Method": "plain", "Auth-User": user, "Auth-Pass": pass,
		"Auth-Protocol": "imap", "Auth-Login-Attempt": "1", "Client-IP": ip, nginx.SecretHeader: secret} {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	resp.Header.Set("X-Status", resp.Status)
	return resp.Header
}

// The adapter starts with the gateway, answers with the running state's
// policy and backends, takes a new policy and a new secret on reload
// (a broken secret file fails the reload), and stops with the gateway.
func TestNginxAdapterFollowsReload(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	b, err := demo.Start(ctx, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, []byte(testNginxSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "nginx.sock")
	mk := func(allow ...string) *Config {
		cfg := opsConfig(b, "127.0.0.1:110")
		cfg.Listeners = cfg.Listeners[:1] // two on :0 do not validate
		cfg.Policy.AllowCountries = allow
		cfg.Adapters.Nginx = nginx.Config{Config: adapter.Config{Listen: "unix:" + sock, SecretFile: secretFile}}
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	g, err := startGateway(mk("US"), log)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			g.shutdown(context.Background())
		}
	})

	h := askNginx(t, sock, testNginxSecret, "alice%40example.test", "alicepass", "127.0.0.1")
	if h.Get("Auth-Status") != "OK" || h.Get("Auth-Server")+":"+h.Get("Auth-Port") != b.IMAPAddr {
		t.Fatalf("allowed login: %v (backend %s)", h, b.IMAPAddr)
	}
	if h := askNginx(t, sock, "wrong-secret-0123456789", "alice%40example.test", "alicepass", "127.0.0.1"); h.Get("X-Status") != "401 Unauthorized" {
		t.Errorf("wrong secret: %v", h)
	}
	if err := g.reload(func() (*Config, error) { return mk("GB"), nil }); err != nil {
		t.Fatal(err)
	}
	if h := askNginx(t, sock, testNginxSecret, "alice%40example.test", "alicepass", "127.0.0.1"); h.Get("Auth-Status") == "OK" {
		t.Errorf("after a reload that no longer allows US: %v", h)
	}
	// A broken secret file fails the reload and keeps the secret in force;
	// a new secret is in force after the next reload.
	os.WriteFile(secretFile, []byte("short\n"), 0o600)
	if err := g.reload(func() (*Config, error) { return mk("US"), nil }); err == nil || !strings.Contains(err.Error(), "adapters.nginx.secret_file") {
		t.Errorf("reload with a broken secret file: %v", err)
	}
	if h := askNginx(t, sock, testNginxSecret, "alice%40example.test", "alicepass", "127.0.0.1"); h.Get("X-Status") != "200 OK" || h.Get("Auth-Status") == "OK" {
		t.Errorf("after a failed reload, want the old secret and policy in force: %v", h)
	}
	const rotated = "rotated-secret-9876543210"
	os.WriteFile(secretFile, []byte(rotated+"\n"), 0o600)
	if err := g.reload(func() (*Config, error) { return mk("US"), nil }); err != nil {
		t.Fatal(err)
	}
	if h := askNginx(t, sock, testNginxSecret, "alice%40example.test", "alicepass", "127.0.0.1"); h.Get("X-Status") != "401 Unauthorized" {
		t.Errorf("the old secret after a rotation: %v", h)
	}
	if h := askNginx(t, sock, rotated, "alice%40example.test", "alicepass", "127.0.0.1"); h.Get("Auth-Status") != "OK" {
		t.Errorf("the new secret after a rotation: %v", h)
	}
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	g.shutdown(sctx)
	stopped = true
	if c, err := net.Dial("unix", sock); err == nil {
		c.Close()
		t.Error("the adapter still answers after shutdown")
	}
}

// Auth-Server is an IP literal and nginx logs in without TLS: a backend
// with a host name or TLS is refused while the adapter is on, and only
// then.
func TestNginxAdapterNeedsPlainIPBackends(t *testing.T) {
	cfg := opsConfig(&demo.Backends{IMAPAddr: "mail.example.test:143", SMTPAddr: "127.0.0.1:25"}, "127.0.0.1:110")
	cfg.Listeners = cfg.Listeners[:1]
	cfg.Backends.POP3.TLS = backend.TLSImplicit
	cfg.Backends.POP3.TLSVerify.Insecure = true
	if err := cfg.Validate(); err != nil {
		t.Fatalf("adapter off: %v", err)
	}
	cfg.Adapters.Nginx = nginx.Config{Config: adapter.Config{Listen: "127.0.0.1:9143", SecretFile: "/s"}}
	err := cfg.Validate()
	for _, want := range []string{
		`backends.imap.address: "mail.example.test:143" must be an IP address and port while adapters.nginx is on`,
		"backends.pop3.tls: implicit, but nginx's mail proxy logs in to the backend in plaintext",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want %q in %v", want, err)
		}
	}
}
