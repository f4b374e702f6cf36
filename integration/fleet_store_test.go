//go:build integration

package integration

// In-process fleet nodes (package fleet's Store and a guard) against a
// real redis-server with the ACL user of docs/fleet.md: the store's own
// behaviour (leases, waits, commands sent), without the mail stack.

import (
	"context"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/mailgate/mailgate/fleet"
	"github.com/mailgate/mailgate/guard"
	"github.com/mailgate/mailgate/integration/redisstack"
)

// redisOnly starts a redis-server with the fleet's users (users: the
// redis.conf lines; "" the documented ones), without the mail stack, or
// skips (fails in CI) when it is not installed.
func redisOnly(t testing.TB, users string) *redisstack.Server {
	t.Helper()
	if m := redisstack.Missing(); len(m) > 0 {
		if inCI() {
			t.Fatalf("%v not installed (.ci/run installs them)", m)
		}
		t.Skipf("%v not installed", m)
	}
	dir := t.TempDir()
	if users == "" {
		users = fleetUsers
	}
	s, err := redisstack.Start(dir, users)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Kill)
	return s
}

// storeGuardConfig is a guard config on the store at addr as the
// documented ACL user, with small thresholds and no tarpit.
func storeGuardConfig(t testing.TB, addr string) guard.Config {
	t.Helper()
	dir := t.TempDir()
	key, pw := filepath.Join(dir, "hash-key"), filepath.Join(dir, "store-password")
	if err := os.WriteFile(key, []byte("fleet-hash-key-for-the-integration-tests\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pw, []byte("fleet-store-password-0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := guard.Defaults()
	c.Tarpit.After = 0
	c.Ban.IPAfter = 3
	c.Ban.NetworkAfter = 0
	c.Lockout.After = 4
	c.Lockout.PerIPAfter = 0
	c.Shared.Addresses = []string{addr}
	c.Shared.Username = "mailgate"
	c.Shared.PasswordFile = pw
	c.Shared.HashKeyFile = key
	c.Shared.Timeout = time.Second
	return c
}

// storeNode is one in-process node; stop ends it as a crash would (no
// Finish, no more renewals, its connections closed).
type storeNode struct {
	g    *guard.Guard
	s    *fleet.Store
	stop func()
}

func startStoreNode(t testing.TB, c guard.Config) *storeNode {
	t.Helper()
	s, err := fleet.New(c.Shared, fleet.Options{})
	if err != nil {
		t.Fatal(err)
	}
	g, err := guard.New(c, guard.Options{Shared: s, HashKey: s.HashKey(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { s.Run(ctx, g) })
	var once sync.Once
	n := &storeNode{g: g, s: s, stop: func() { once.Do(func() { cancel(); wg.Wait(); s.Close() }) }}
	t.Cleanup(n.stop)
	if !waitFor(s.Up, eventually) {
		t.Fatal("store not up within 10s")
	}
	return n
}

// heldBack reports whether an attempt from src on n is held back by
// attempts in flight (a short wait that runs out).
func (n *storeNode) heldBack(src string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	a := n.g.Attempt("u", netip.MustParseAddr(src), "q")
	v := a.Begin(ctx)
	a.Finish(guard.Abandoned, "")
	return !v.Allow
}
