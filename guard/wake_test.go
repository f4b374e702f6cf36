package guard

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// An attempt ending wakes only the attempts waiting on what it held (its
// address, networks and login), not every waiter: attempts that come and
// go elsewhere must not make parked waits re-check under the guard's lock
// (attack review of issue #14, finding 5).
func TestWakeOnlyWhatTheAttemptHeld(t *testing.T) {
	g, _ := newTestGuard(t, func(c *Config) { c.Lockout.PerIPAfter = 0 }) // ban.ip_after 10
	admitted := beginAll(g, 10, func(i int) (string, netip.Addr) { return fmt.Sprintf("u%d@example.org", i), addr1 })
	if len(admitted) != 10 {
		t.Fatalf("%d admitted, want 10", len(admitted))
	}
	got := waitFlight(t.Context(), g, "late@example.org", addr1)
	for !g.hasWaiters() {
		time.Sleep(time.Millisecond)
	}
	g.mu.Lock()
	w := g.flightWake[addr1]
	g.mu.Unlock()
	if w == nil {
		t.Fatalf("no wake channel for %v: %v", addr1, g.flightWake)
	}
	// An unrelated attempt (another address in another network, another
	// login) comes and goes: the waiter's channel stays open.
	other := netip.MustParseAddr("198.51.100.77")
	v, a := g.beginNow("someone@example.org", other)
	if !v.Allow {
		t.Fatalf("unrelated attempt refused: %+v", v)
	}
	a.Finish(Abandoned, "")
	select {
	case <-w.ch:
		t.Fatal("an unrelated attempt woke the waiter")
	default:
	}
	// One of the attempts it waits for ends: it is woken and goes on.
	g.success(admitted[0].login, addr1, "")
	admitted[0].Finish(Abandoned, "")
	if v := <-got; !v.Allow {
		t.Fatalf("waiter after a success = %+v, want allowed", v)
	}
	for _, a := range admitted[1:] {
		a.Finish(Abandoned, "")
	}
}

// A wait that ends by its deadline, with no attempt on its keys ending,
// leaves nothing behind: otherwise every waiting address would keep a map
// entry for the life of the process.
func TestWaitOutLeavesNoWakeEntries(t *testing.T) {
	g, _ := newTestGuard(t, func(c *Config) { c.Lockout.PerIPAfter = 0 }) // ban.ip_after 10
	admitted := beginAll(g, 10, func(i int) (string, netip.Addr) { return fmt.Sprintf("u%d@example.org", i), addr1 })
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if v := <-waitFlight(ctx, g, "late@example.org", addr1); v.Allow || !v.Waited {
		t.Fatalf("wait with the budget in flight = %+v, want a wait that ran out", v)
	}
	g.mu.Lock()
	n := len(g.flightWake)
	g.mu.Unlock()
	if n != 0 {
		t.Errorf("%d wake entries left after the wait ended", n)
	}
	for _, a := range admitted {
		a.Finish(Abandoned, "")
	}
}
