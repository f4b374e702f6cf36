package guard

import (
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
	ch := g.flightWake[addr1]
	g.mu.Unlock()
	if ch == nil {
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
	case <-ch:
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
