package guard

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestConsoleKeyApartFromMailLogin: failures of the console key lock
// the console account only, its LOCKED line names console_user (not
// user), Lockouts sets Console, and the mail login "console:NAME" is
// another key.
func TestConsoleKeyApartFromMailLogin(t *testing.T) {
	g, _ := newTestGuard(t, func(c *Config) { c.Tarpit.After = 0 })
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	key := ConsoleLogin("root")
	for i := range 10 {
		a := g.Attempt(key, netip.AddrFrom4([4]byte{10, 0, byte(i), 1}), fmt.Sprintf("pw%d", i))
		a.Begin(context.Background())
		for _, e := range a.Finish(WrongPassword, "") {
			e.Log(context.Background(), log)
		}
	}
	if !strings.Contains(buf.String(), "msg=LOCKED console_user=root ") || strings.Contains(buf.String(), " user=") {
		t.Errorf("LOCKED line of a console account:\n%s", buf.String())
	}
	ls := g.Lockouts()
	if len(ls) != 1 || ls[0].Console != "root" {
		t.Fatalf("lockouts %+v", ls)
	}
	if v := g.checkNow("console:root", netip.MustParseAddr("10.1.1.1")); !v.Allow {
		t.Errorf("the mail login console:root is refused: %s", v.Reason)
	}
	if g.Unlock("console:root") || !g.Unlock(key) || len(g.Lockouts()) != 0 {
		t.Error("only the console key unlocks the console account")
	}
	if n, ok := ConsoleAccount("console:root"); ok || n != "" {
		t.Errorf("ConsoleAccount(console:root) = %q, %v", n, ok)
	}
}

// TestConsoleLockoutSurvivesRestart: a console account's lockout is
// saved and loaded under its own key (the NUL survives JSON).
func TestConsoleLockoutSurvivesRestart(t *testing.T) {
	g, _ := newTestGuard(t, func(c *Config) { c.Tarpit.After = 0 })
	for i := range 10 {
		a := g.Attempt(ConsoleLogin("root"), netip.AddrFrom4([4]byte{10, 0, byte(i), 1}), fmt.Sprintf("pw%d", i))
		a.Begin(context.Background())
		a.Finish(WrongPassword, "")
	}
	path := filepath.Join(t.TempDir(), "guard.json")
	if err := g.Save(path); err != nil {
		t.Fatal(err)
	}
	g2, _ := newTestGuard(t, nil)
	if err := g2.Load(path); err != nil {
		t.Fatal(err)
	}
	if ls := g2.Lockouts(); len(ls) != 1 || ls[0].Console != "root" || ls[0].Login != ConsoleLogin("root") {
		t.Fatalf("loaded lockouts %+v", ls)
	}
}

// BenchmarkLockouts lists 10,000 and 100,000 lockouts: the copy under
// the lock and the sort outside it.
func BenchmarkLockouts(b *testing.B) {
	for _, n := range []int{10000, 100000} {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			g, _ := newTestGuard(b, func(c *Config) { c.MaxTracked = 2 * n })
			now := g.now()
			g.mu.Lock()
			for i := range n {
				l := fmt.Sprintf("user%06d@example.org", (i*7919)%n)
				*g.locks.update(l) = Lockout{Login: l, Created: now, Until: now.Add(time.Hour), Reason: "bench"}
			}
			g.mu.Unlock()
			b.ReportAllocs()
			for b.Loop() {
				if got := len(g.Lockouts()); got != n {
					b.Fatalf("%d lockouts", got)
				}
			}
		})
	}
}
