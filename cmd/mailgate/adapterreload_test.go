package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/adapter"
	"github.com/mailgate/mailgate/adapter/nginx"
	"github.com/mailgate/mailgate/cmd/mailgate/internal/demo"
)

// A reload logs exactly what it does for adapters.*: the nginx
// adapter's verify mode, like its secret, is in force after the reload,
// so no "after a restart" line; a changed listen does need a restart,
// and the line names it.
func TestAdapterReloadSaysWhatWaits(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	b, err := demo.Start(ctx, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, []byte(testNginxSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mk := func(sock, verify, auth string) *Config {
		cfg := opsConfig(b, "127.0.0.1:110")
		cfg.Listeners = cfg.Listeners[:1]
		cfg.Adapters.Nginx = nginx.Config{Config: adapter.Config{Listen: "unix:" + filepath.Join(dir, sock), SecretFile: secretFile},
			Verify: verify, DovecotAuth: auth}
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	var logBuf syncWriter
	g, err := startGateway(mk("a.sock", "", ""), slog.New(slog.NewTextHandler(&logBuf, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.shutdown(context.Background()) })
	if err := g.reload(func() (*Config, error) { return mk("a.sock", "dovecot-auth", "127.0.0.1:1"), nil }); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logBuf.String(), "after a restart") {
		t.Errorf("a reload that changed adapters.nginx.verify, which it applies, said it waits for a restart:\n%s", logBuf.String())
	}
	if err := g.reload(func() (*Config, error) { return mk("b.sock", "dovecot-auth", "127.0.0.1:1"), nil }); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logBuf.String(), "reload: adapters.nginx.listen changed") {
		t.Errorf("a changed listen did not say it waits for a restart:\n%s", logBuf.String())
	}
}
