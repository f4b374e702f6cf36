package main

import (
	"context"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/cmd/mailgate/internal/demo"
)

// A backend's log line names the backend once: `backend=imap`, not also
// the config key (`backend=backends.imap backend=imap`), which gave a
// log parser two values for one key. The demo's IMAP server offers no
// ID, so a login with forward_client logs the backend's warning.
func TestBackendLogLineNamesBackendOnce(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b, err := demo.Start(ctx, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	cfg := opsConfig(b, closedAddr(t))
	cfg.Backends.IMAP.ForwardClient = true
	var buf syncBuf
	g, err := startGateway(cfg, slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		g.shutdown(sctx)
	}()
	if r := imapLogin(t, g.lns[0].Addr().String(), "127.0.0.1", "alice@example.test", "alicepass"); !strings.HasPrefix(r, "a OK") {
		t.Fatalf("login = %q", r)
	}
	key := regexp.MustCompile(`(?:^| )backend=(\S+)`)
	var found bool
	for _, l := range strings.Split(buf.String(), "\n") {
		if !strings.Contains(l, "imap backend does not offer ID") {
			continue
		}
		found = true
		m := key.FindAllStringSubmatch(l, -1)
		if len(m) != 1 || m[0][1] != "imap" {
			t.Errorf("backend attributes %q, want one backend=imap, in:\n%s", m, l)
		}
	}
	if !found {
		t.Fatalf("no backend warning logged:\n%s", buf.String())
	}
}
