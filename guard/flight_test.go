package guard

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// beginAll runs n concurrent Begins (login and address from at(i)) before
// any outcome is reported and returns the attempts admitted.
func beginAll(g *Guard, n int, at func(i int) (string, netip.Addr)) []*Attempt {
	var (
		mu  sync.Mutex
		got []*Attempt
		wg  sync.WaitGroup
	)
	for i := range n {
		wg.Go(func() {
			login, addr := at(i)
			if v, a := g.beginNow(login, addr); v.Allow {
				mu.Lock()
				got = append(got, a)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return got
}

func TestBeginHoldsLockoutUnderConcurrency(t *testing.T) {
	g, _ := newTestGuard(t, nil) // lockout.after 10
	const alice = "alice@example.org"
	admitted := beginAll(g, 64, func(i int) (string, netip.Addr) {
		return alice, netip.AddrFrom4([4]byte{10, byte(i), 0, 1})
	})
	if len(admitted) != 10 {
		t.Fatalf("%d of 64 concurrent attempts on one login admitted, want lockout.after = 10", len(admitted))
	}
	// Each admitted attempt fails at the backend; then alice is locked.
	var locked bool
	for i, a := range admitted {
		ev := g.failure(alice, a.addr, fmt.Sprint("guess", i))
		a.Finish(Abandoned, "")
		if _, ok := findEvent(ev, EventLocked, alice); ok {
			locked = true
		}
	}
	if !locked {
		t.Fatal("10 failed admitted attempts did not lock the login")
	}
	if v, _ := g.beginNow(alice, netip.MustParseAddr("10.250.0.1")); v.Allow {
		t.Fatalf("Begin after lockout = %+v, want refused", v)
	}
}

func TestBeginHoldsAddressBanUnderConcurrency(t *testing.T) {
	g, _ := newTestGuard(t, func(c *Config) { c.Lockout.PerIPAfter = 0 }) // ban.ip_after 10
	admitted := beginAll(g, 50, func(i int) (string, netip.Addr) {
		return fmt.Sprintf("u%d@example.org", i), addr1
	})
	if len(admitted) != 10 {
		t.Fatalf("%d of 50 concurrent attempts from one address admitted, want ban.ip_after = 10", len(admitted))
	}
	for i, a := range admitted {
		g.failure(a.login, addr1, fmt.Sprint("pw", i))
		a.Finish(Abandoned, "")
	}
	if v, _ := g.beginNow("new@example.org", addr1); v.Allow {
		t.Fatalf("Begin after ban.ip_after failures = %+v, want refused", v)
	}
}

func TestBeginReleaseWithoutVerdictFreesSlot(t *testing.T) {
	g, _ := newTestGuard(t, func(c *Config) { c.Lockout.After = 2 })
	const bob = "bob@example.org"
	a := beginAll(g, 5, func(i int) (string, netip.Addr) { return bob, netip.AddrFrom4([4]byte{10, 1, byte(i), 1}) })
	if len(a) != 2 {
		t.Fatalf("%d admitted, want lockout.after = 2", len(a))
	}
	if v, _ := g.beginNow(bob, addrFar); v.Allow {
		t.Fatal("third attempt admitted while two are in flight")
	}
	// The backend was down for both: no verdict, released.
	a[0].Finish(Abandoned, "")
	a[0].Finish(Abandoned, "") // twice is harmless
	a[1].Finish(Abandoned, "")
	v, b := g.beginNow(bob, addrFar)
	if !v.Allow {
		t.Fatalf("Begin after releases = %+v, want allowed", v)
	}
	b.Finish(Abandoned, "")
	if n := len(g.flight.ip) + len(g.flight.net) + len(g.flight.login) + len(g.flight.pair); n != 0 {
		t.Fatalf("%d in-flight keys left after every release, want 0", n)
	}
}

func TestBeginTrustedNotCounted(t *testing.T) {
	g, _ := newTestGuard(t, func(c *Config) {
		c.TrustedNetworks = []string{"203.0.113.0/24"}
		c.Lockout.After = 3
	})
	const alice = "alice@example.org"
	// Trusted attempts in flight do not use up alice's lockout.
	trusted := beginAll(g, 20, func(int) (string, netip.Addr) { return alice, trustedA })
	if len(trusted) != 20 {
		t.Fatalf("%d of 20 trusted attempts admitted, want all", len(trusted))
	}
	untrusted := beginAll(g, 10, func(i int) (string, netip.Addr) { return alice, netip.AddrFrom4([4]byte{10, 9, byte(i), 1}) })
	if len(untrusted) != 3 {
		t.Fatalf("%d untrusted attempts admitted beside 20 trusted in flight, want lockout.after = 3", len(untrusted))
	}
}

// An attempt is finished once: a second Finish (the connection's close
// after the login's own) neither counts again nor releases another
// attempt's reservation, and Abandoned counts nothing.
func TestAttemptFinishOnce(t *testing.T) {
	g, _ := newTestGuard(t, func(c *Config) { c.Lockout.After = 1 })
	const bob = "bob@example.org"
	v1, a1 := g.beginNow(bob, addr1)
	if !v1.Allow {
		t.Fatalf("first Begin = %+v, want allowed", v1)
	}
	if v, _ := g.beginNow(bob, addr2); v.Allow || !v.Waited {
		t.Fatalf("second attempt while the first is in flight = %+v, want refused with Waited", v)
	}
	a1.Finish(Abandoned, "") // backend never answered
	a1.Finish(WrongPassword, "")
	if _, counted := g.loginFail.get(normLogin(bob)); counted {
		t.Fatal("Abandoned, or a second Finish, was counted as a failure")
	}
	v2, a2 := g.beginNow(bob, addr2)
	if !v2.Allow {
		t.Fatalf("Begin after the first attempt finished = %+v, want allowed", v2)
	}
	a1.Finish(Abandoned, "") // must not release a2's reservation
	if v, _ := g.beginNow(bob, addr1); v.Allow {
		t.Fatal("a repeated Finish released another attempt's reservation")
	}
	a2.Finish(Abandoned, "")
	var nilAttempt *Attempt // no guard
	if v := nilAttempt.Begin(t.Context()); !v.Allow || nilAttempt.Finish(WrongPassword, "") != nil {
		t.Fatalf("nil Attempt: Begin = %+v, want allowed and nothing recorded", v)
	}
}

// hookClock is a fixed clock that runs fire once, on its armed call.
type hookClock struct {
	mu    sync.Mutex
	t     time.Time
	calls int // calls left before fire runs; <= 0: disarmed
	fire  func()
}

func (c *hookClock) Now() time.Time {
	c.mu.Lock()
	f := c.fire
	c.calls--
	if c.calls != 0 {
		f = nil
	} else {
		c.fire = nil
	}
	c.mu.Unlock()
	if f != nil {
		f()
	}
	return c.t
}

// Another connection's failure can lock the login at any moment of a
// Begin. However the two interleave, a Begin that the lock did not
// refuse must have counted that attempt in flight: the login never gets
// more than lockout.after backend attempts. The failure is injected from
// the clock, on the second time Begin reads it, which is where a Begin
// that checked and reserved under two separate holds of the lock let an
// attempt through on a login locked in between.
func TestBeginRacingLockout(t *testing.T) {
	clk := &hookClock{t: time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)}
	c := Defaults()
	c.Lockout.After, c.Lockout.PerIPAfter = 3, 0
	g, err := New(c, Options{Now: clk.Now, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	const alice = "alice@example.org"
	at := func(i byte) netip.Addr { return netip.AddrFrom4([4]byte{10, i, 0, 1}) }
	for i := range byte(2) { // two failures, each begun and ended
		if v, a := g.beginNow(alice, at(i)); !v.Allow {
			t.Fatalf("attempt %d refused: %+v", i, v)
		} else {
			g.failure(alice, at(i), fmt.Sprint("guess", i))
			a.Finish(Abandoned, "")
		}
	}
	v, third := g.beginNow(alice, at(2)) // in flight: the third and last
	if !v.Allow {
		t.Fatalf("third attempt refused: %+v", v)
	}
	fired := false
	fail := func() {
		fired = true
		if ev := g.failure(alice, at(2), "guess2"); len(ev) == 0 || ev[0].Kind != EventLocked {
			t.Errorf("third failure raised %v, want LOCKED", kinds(ev))
		}
		third.Finish(Abandoned, "")
	}
	clk.mu.Lock()
	clk.calls, clk.fire = 2, fail
	clk.mu.Unlock()
	v, fourth := g.beginNow(alice, at(3))
	clk.mu.Lock()
	clk.calls, clk.fire = 0, nil
	clk.mu.Unlock()
	if !fired {
		fail() // Begin read the clock once: the failure comes after it
	}
	if v.Allow {
		fourth.Finish(Abandoned, "")
		t.Fatalf("a fourth backend attempt on a login with lockout.after 3 was allowed: %+v", v)
	}
}
