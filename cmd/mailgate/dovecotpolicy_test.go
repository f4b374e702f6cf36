package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailgate/mailgate/adapter/dovecot"
	"github.com/mailgate/mailgate/cmd/mailgate/internal/demo"
)

// adapters.dovecot wired into serve: the listener answers only with the
// secret, decides by the policy in force (which follows a reload), logs
// the proxy's COUNTRYFAILED line, counts its metrics, and a reload that
// changes the adapter's keys says they wait for a restart.
func TestDovecotPolicyServe(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b, err := demo.Start(ctx, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	pop3, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pop3.Close()
	const secret = "unit-test-dovecot-secret-0123"
	secretFile := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mk := func(allow string, lease time.Duration) *Config {
		c := opsConfig(b, pop3.Addr().String())
		c.Policy.AllowCountries = []string{allow}
		c.Adapters.Dovecot.Listen = "127.0.0.1:0"
		c.Adapters.Dovecot.SecretFile = secretFile
		c.Adapters.Dovecot.Lease = lease
		return c
	}
	var logBuf syncWriter
	log := slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	g, err := startGateway(mk("US", 30*time.Second), log)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		g.shutdown(sctx)
	}()
	if g.dovecotPolicy == nil {
		t.Fatal("adapters.dovecot.listen set, but no listener")
	}
	url := "http://" + g.dovecotPolicy.String() + "/?command=allow"
	allow := func(remote, key string) (int, string) {
		t.Helper()
		body := `{"device_id":"","login":"alice@example.test","protocol":"imap","pwhash":"0abc","remote":"` + remote + `","session_id":"S` + remote + `","tls":false}`
		req, _ := http.NewRequest("POST", url, strings.NewReader(body))
		if key != "" {
			req.Header.Set(dovecot.SecretHeader, key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(out))
	}
	// Without the secret: a refusal Dovecot acts on (an HTTP error it
	// would take as no opinion).
	if code, out := allow("127.0.0.1", ""); code != 200 || out != `{"status":-1,"msg":""}` {
		t.Fatalf("without the secret: HTTP %d %s, want 200 and status -1", code, out)
	}
	if code, out := allow("127.0.0.1", "wrong-secret-0123456789"); code != 200 || out != `{"status":-1,"msg":""}` {
		t.Fatalf("with a wrong secret: HTTP %d %s, want 200 and status -1", code, out)
	}
	if code, out := allow("127.0.0.1", secret); code != 200 || out != `{"status":0,"msg":""}` {
		t.Fatalf("US: HTTP %d %s, want status 0", code, out)
	}
	if code, out := allow("127.0.0.2", secret); code != 200 || out != `{"status":-1,"msg":""}` {
		t.Fatalf("RU: HTTP %d %s, want status -1", code, out)
	}
	if !strings.Contains(logBuf.String(), "msg=COUNTRYFAILED cid=") || !strings.Contains(logBuf.String(), "listener=dovecot-policy remote=127.0.0.2 event=COUNTRYFAILED") {
		t.Fatalf("no COUNTRYFAILED line in the proxy's form:\n%s", logBuf.String())
	}
	e := &opsEnv{g: g, admin: newAdminServer(g, "", nil)}
	_, metrics := e.get(t, "/metrics")
	wantSeries(t, metrics, `mailgate_dovecot_policy_requests_total{command="allow",result="accept"}`, "1")
	wantSeries(t, metrics, `mailgate_dovecot_policy_requests_total{command="allow",result="reject"}`, "1")
	wantSeries(t, metrics, "mailgate_dovecot_policy_parked", "1")
	wantSeries(t, metrics, `mailgate_dovecot_policy_requests_total{command="allow",result="unauthorized"}`, "2")
	if n := strings.Count(logBuf.String(), "adapter request refused: missing or wrong secret"); n != 1 {
		t.Errorf("%d refusal lines for two refusals within a minute, want 1:\n%s", n, logBuf.String())
	}

	// The policy and a new secret follow a reload (a broken secret file
	// fails it and keeps the old); the reload says which keys wait for a
	// restart, and only those.
	const rotated = "unit-test-rotated-secret-9876"
	os.WriteFile(secretFile, []byte("short\n"), 0o600)
	if err := g.reload(func() (*Config, error) { return mk("RU", 30*time.Second), nil }); err == nil || !strings.Contains(err.Error(), "adapters.dovecot.secret_file") {
		t.Errorf("reload with a broken secret file: %v", err)
	}
	if _, out := allow("127.0.0.1", secret); out != `{"status":0,"msg":""}` {
		t.Fatalf("the secret in force after a failed reload: %s, want status 0", out)
	}
	os.WriteFile(secretFile, []byte(rotated+"\n"), 0o600)
	if err := g.reload(func() (*Config, error) { return mk("RU", 30*time.Second), nil }); err != nil {
		t.Fatal(err)
	}
	if _, out := allow("127.0.0.2", rotated); out != `{"status":0,"msg":""}` {
		t.Fatalf("RU with the new secret after the reload to RU: %s, want status 0", out)
	}
	if _, out := allow("127.0.0.4", secret); out != `{"status":-1,"msg":""}` {
		t.Fatalf("the old secret after a rotation: %s, want status -1", out)
	}
	if !strings.Contains(logBuf.String(), "reload: adapters.dovecot uses the new secret from secret_file") {
		t.Errorf("no line for the new secret:\n%s", logBuf.String())
	}
	if strings.Contains(logBuf.String(), "take effect after a restart") || strings.Contains(logBuf.String(), "takes effect after a restart") {
		t.Errorf("a reload that changed no listener said something waits for a restart:\n%s", logBuf.String())
	}
	if err := g.reload(func() (*Config, error) { return mk("RU", 10*time.Second), nil }); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logBuf.String(), "reload: adapters.dovecot.lease and max_parked take effect after a restart") {
		t.Errorf("no warning that lease changes need a restart:\n%s", logBuf.String())
	}
}

// syncWriter is a bytes.Buffer safe for the gateway's goroutines.
type syncWriter struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}
func (w *syncWriter) String() string { w.mu.Lock(); defer w.mu.Unlock(); return w.buf.String() }
