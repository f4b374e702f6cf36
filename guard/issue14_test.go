package guard

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// Issue #14, findings 5, 6 and 8, and the backend-error accounting.

// waitFlight starts BeginWait in a goroutine and returns its result.
func waitFlight(ctx context.Context, g *Guard, login string, addr netip.Addr) <-chan Verdict {
	ch := make(chan Verdict, 1)
	go func() {
		v, a := g.beginWait(ctx, login, addr)
		if v.Allow {
			defer a.Finish(Abandoned, "")
		}
		ch <- v
	}()
	return ch
}

// waitersOf reports whether someone waits in BeginWait.
func (g *Guard) hasWaiters() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.flightWake) > 0
}

func TestBeginWaitGoesOnWhenFlightSucceeds(t *testing.T) {
	g, _ := newTestGuard(t, func(c *Config) { c.Lockout.PerIPAfter = 0 }) // ban.ip_after 10
	admitted := beginAll(g, 10, func(i int) (string, netip.Addr) { return fmt.Sprintf("u%d@example.org", i), addr1 })
	if len(admitted) != 10 {
		t.Fatalf("%d admitted, want 10", len(admitted))
	}
	if v, _ := g.beginNow("x@example.org", addr1); v.Allow || !v.Waited {
		t.Fatalf("Begin with the budget in flight = %+v, want refused with Waited", v)
	}
	got := waitFlight(t.Context(), g, "late@example.org", addr1)
	for !g.hasWaiters() {
		time.Sleep(time.Millisecond)
	}
	select {
	case v := <-got:
		t.Fatalf("BeginWait returned %+v while the budget is in flight", v)
	case <-time.After(20 * time.Millisecond):
	}
	// The first attempt succeeds: the address is proven, the waiter goes on.
	g.success(admitted[0].login, addr1, "")
	admitted[0].Finish(Abandoned, "")
	if v := <-got; !v.Allow {
		t.Fatalf("waiter after a success = %+v, want allowed", v)
	}
	for _, a := range admitted[1:] {
		g.success(a.login, addr1, "")
		a.Finish(Abandoned, "")
	}
	if b := g.Bans(); len(b) != 0 {
		t.Fatalf("bans after successes only: %v", b)
	}
}

func TestBeginWaitMeetsBanWhenFlightFails(t *testing.T) {
	g, _ := newTestGuard(t, func(c *Config) { c.Lockout.PerIPAfter = 0 })
	admitted := beginAll(g, 10, func(i int) (string, netip.Addr) { return fmt.Sprintf("u%d@example.org", i), addr1 })
	got := waitFlight(t.Context(), g, "late@example.org", addr1)
	for !g.hasWaiters() {
		time.Sleep(time.Millisecond)
	}
	for i, a := range admitted {
		g.failure(a.login, addr1, fmt.Sprint("guess", i))
		a.Finish(Abandoned, "")
	}
	v := <-got
	if v.Allow || v.Waited {
		t.Fatalf("waiter after 10 failures = %+v, want refused by the ban (not Waited)", v)
	}
	if len(g.Bans()) != 1 {
		t.Fatalf("bans %v, want the address", g.Bans())
	}
}

func TestBeginWaitTimeoutIsNotAFailure(t *testing.T) {
	g, _ := newTestGuard(t, func(c *Config) { c.Lockout.PerIPAfter = 0 })
	admitted := beginAll(g, 10, func(i int) (string, netip.Addr) { return fmt.Sprintf("u%d@example.org", i), addr1 })
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Millisecond)
	defer cancel()
	v, a := g.beginWait(ctx, "late@example.org", addr1)
	if v.Allow || !v.Waited || a.reserved {
		t.Fatalf("BeginWait past its context = %+v, want refused with Waited and no reservation", v)
	}
	g.mu.Lock()
	_, counted := g.ipFail.get(addr1)
	g.mu.Unlock()
	if counted {
		t.Fatal("a wait that ran out was counted as a failure")
	}
	for _, a := range admitted {
		a.Finish(Abandoned, "")
	}
}

// Finding 6: one address, 64 and then 128 concurrent correct logins, each
// waiting its turn: none refused, no ban.
func TestConcurrentSuccessesNeverRefused(t *testing.T) {
	g, _ := newTestGuard(t, nil)
	for _, n := range []int{64, 128} {
		var wg sync.WaitGroup
		var mu sync.Mutex
		var refused []string
		for i := range n {
			wg.Go(func() {
				login := fmt.Sprintf("user%d@example.org", i%7) // some logins share the pair budget
				for range 5 {
					v, a := g.beginWait(t.Context(), login, addrFar)
					if !v.Allow {
						mu.Lock()
						refused = append(refused, v.Reason)
						mu.Unlock()
						return
					}
					g.success(login, addrFar, "")
					a.Finish(Abandoned, "")
				}
			})
		}
		wg.Wait()
		if len(refused) != 0 {
			t.Fatalf("%d concurrent clients: %d refusals, first %q", n, len(refused), refused[0])
		}
	}
	if b := g.Bans(); len(b) != 0 {
		t.Fatalf("bans: %v", b)
	}
}

// Finding 5: trusted and proven sources pass the global pre-auth cap an
// attacker holds; untrusted networks have their own pre-auth cap.
func TestPreAuthCapsSpareTrustedAndProven(t *testing.T) {
	g, _ := newTestGuard(t, func(c *Config) {
		c.TrustedNetworks = []string{"203.0.113.0/24"}
		c.Connections = ConnectionsConfig{
			MaxTotal: 100, MaxPreAuth: 6, MaxPreAuthPerIP: 10, MaxPreAuthPerNetwork: 3,
			MaxPerIP: 50, MaxPerNetwork: 200, ProvenMaxPerIP: 50, ProvenMaxPreAuthPerIP: 10,
		}
	})
	proven := netip.MustParseAddr("192.0.2.200")
	g.success("bob@example.org", proven, "")
	var held []*Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	// Two attacker networks: each holds its network's 3, then the total.
	for _, a := range []string{"198.51.100.1", "198.51.100.2", "198.51.100.3", "198.18.0.1", "198.18.0.2", "198.18.0.3"} {
		c, err := g.Accept(netip.MustParseAddr(a))
		if err != nil {
			t.Fatalf("Accept(%s) = %v", a, err)
		}
		held = append(held, c)
	}
	if _, err := g.Accept(netip.MustParseAddr("198.51.100.4")); !errors.Is(err, ErrTooManyConns) {
		t.Fatalf("fourth pre-auth connection from one network = %v, want ErrTooManyConns", err)
	}
	if _, err := g.Accept(netip.MustParseAddr("198.19.0.1")); !errors.Is(err, ErrTooManyConns) {
		t.Fatalf("new untrusted source past max_preauth = %v, want ErrTooManyConns", err)
	}
	for _, a := range []netip.Addr{trustedA, trustedA, proven, proven} {
		c, err := g.Accept(a)
		if err != nil {
			t.Fatalf("Accept(%s) with the pre-auth cap held by others = %v, want admitted", a, err)
		}
		held = append(held, c)
	}
}

func TestProvenSourceHasItsOwnPerIPCaps(t *testing.T) {
	g, _ := newTestGuard(t, func(c *Config) {
		c.Connections.MaxPreAuthPerIP = 2
		c.Connections.ProvenMaxPreAuthPerIP = 4
	})
	var held []*Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	accept := func(n int) error {
		for range n {
			c, err := g.Accept(addr1)
			if err != nil {
				return err
			}
			held = append(held, c)
		}
		return nil
	}
	if err := accept(2); err != nil {
		t.Fatal(err)
	}
	if err := accept(1); !errors.Is(err, ErrTooManyConns) {
		t.Fatalf("third pre-auth connection of an unproven address = %v, want ErrTooManyConns", err)
	}
	g.success("alice@example.org", addr1, "")
	if err := accept(2); err != nil {
		t.Fatalf("proven address within proven_max_preauth_per_ip: %v", err)
	}
	if err := accept(1); !errors.Is(err, ErrTooManyConns) {
		t.Fatalf("proven address past proven_max_preauth_per_ip = %v, want ErrTooManyConns", err)
	}
}

// Finding 5: backend slots keep a reserve for trusted and proven sources,
// and one unproven address holds at most max_per_source.
func TestBackendSlotReserve(t *testing.T) {
	g, _ := newTestGuard(t, func(c *Config) {
		c.TrustedNetworks = []string{"203.0.113.0/24"}
		c.Backend = BackendConfig{MaxConcurrent: 4, Reserved: 2, MaxPerSource: 1, Queue: 8, QueueWait: 20 * time.Millisecond}
	})
	ctx := t.Context()
	var rel []func()
	defer func() {
		for _, r := range rel {
			r()
		}
	}()
	take := func(a netip.Addr) error {
		r, err := g.BackendSlotFor(ctx, a)
		if err == nil {
			rel = append(rel, r)
		}
		return err
	}
	if err := take(addr1); err != nil {
		t.Fatal(err)
	}
	if err := take(addr1); !errors.Is(err, ErrBackendBusy) {
		t.Fatalf("second slot for one unproven address = %v, want ErrBackendBusy (max_per_source)", err)
	}
	if err := take(addr2); err != nil {
		t.Fatal(err)
	}
	if err := take(addrFar); !errors.Is(err, ErrBackendBusy) {
		t.Fatalf("third unproven slot = %v, want ErrBackendBusy (2 reserved)", err)
	}
	if err := take(trustedA); err != nil {
		t.Fatalf("trusted login with the unreserved slots taken: %v", err)
	}
	g.success("bob@example.org", addrFar, "")
	if err := take(addrFar); err != nil {
		t.Fatalf("proven login with the unreserved slots taken: %v", err)
	}
	if err := take(trustedA); !errors.Is(err, ErrBackendBusy) {
		t.Fatalf("fifth slot of 4 = %v, want ErrBackendBusy", err)
	}
	// A waiting unproven login gets a slot when one frees.
	got := make(chan error, 1)
	g2, _ := newTestGuard(t, func(c *Config) {
		c.Backend = BackendConfig{MaxConcurrent: 2, Reserved: 1, MaxPerSource: 1, Queue: 8, QueueWait: 10 * time.Second}
	})
	r1, err := g2.BackendSlotFor(ctx, addr1)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		r, err := g2.BackendSlotFor(ctx, addr2)
		if err == nil {
			r()
		}
		got <- err
	}()
	for g2.slotsQueued() != 1 {
		time.Sleep(time.Millisecond)
	}
	r1()
	if err := <-got; err != nil {
		t.Fatalf("queued login after a release: %v", err)
	}
}

func TestReservedValidated(t *testing.T) {
	c := Defaults()
	c.Backend.Reserved = -1
	if err := c.Validate(); err == nil {
		t.Fatal("backend.reserved -1 accepted")
	}
	// A config that only lowers max_concurrent below the default reserve
	// must still start, and unproven sources must keep slots of their own.
	for _, tc := range []struct{ max, reserved, want int }{
		{32, 8, 8}, {4, 8, 2}, {4, 4, 2}, {1, 8, 0}, {0, 8, 0},
	} {
		c := Defaults()
		c.Backend.MaxConcurrent, c.Backend.Reserved = tc.max, tc.reserved
		if err := c.Validate(); err != nil {
			t.Fatalf("max_concurrent %d, reserved %d: %v", tc.max, tc.reserved, err)
		}
		if got := c.Backend.reserve(); got != tc.want {
			t.Errorf("max_concurrent %d, reserved %d: reserve %d, want %d", tc.max, tc.reserved, got, tc.want)
		}
	}
}

// Finding 8: the failure floor follows Dovecot's penalty from a source's
// recent failures of every kind.
func TestFailureDelaySchedule(t *testing.T) {
	g, clk := newTestGuard(t, func(c *Config) { c.TrustedNetworks = []string{"203.0.113.0/24"} })
	const base = 3 * time.Second
	want := []time.Duration{3, 7, 11, 18, 18, 18}
	for i, w := range want {
		if got := g.FailureDelay(addr1, base); got != w*time.Second {
			t.Fatalf("after %d failures: FailureDelay = %v, want %v", i, got, w*time.Second)
		}
		if i%2 == 0 {
			g.failure("alice@example.org", addr1, fmt.Sprint("pw", i))
		} else {
			g.denied("alice@example.org", addr1, fmt.Sprint("pw", i))
		}
		clk.Advance(5 * time.Second)
	}
	if got := g.FailureDelay(addr2, base); got != base {
		t.Fatalf("another address: %v, want %v", got, base)
	}
	clk.Advance(time.Minute)
	if got := g.FailureDelay(addr1, base); got != base {
		t.Fatalf("a minute after the last failure: %v, want %v", got, base)
	}
	// Trusted networks reach the backend too: the floor holds for them.
	g.failure("alice@example.org", trustedA, "x")
	if got := g.FailureDelay(trustedA, base); got != 7*time.Second {
		t.Fatalf("trusted source after one failure: %v, want 7s", got)
	}
	// IPv6: keyed by the /48, as Dovecot keys its penalty.
	g.denied("alice@example.org", netip.MustParseAddr("2001:db8:1:2::1"), "x")
	if got := g.FailureDelay(netip.MustParseAddr("2001:db8:1:ffff::9"), base); got != 7*time.Second {
		t.Fatalf("same /48: %v, want 7s", got)
	}
	off, _ := newTestGuard(t, func(c *Config) { c.FailurePenalty.Init = 0 })
	off.failure("alice@example.org", addr1, "x")
	if got := off.FailureDelay(addr1, base); got != base {
		t.Fatalf("failure_penalty off: %v, want %v", got, base)
	}
}

func TestBackendErrorCountsAgainstSource(t *testing.T) {
	g, _ := newTestGuard(t, func(c *Config) { c.TrustedNetworks = []string{"203.0.113.0/24"} })
	var ev []Event
	for range 10 {
		ev = append(ev, g.backendError("alice@example.org", addr1)...)
	}
	if _, ok := findEvent(ev, EventBanned, "192.0.2.1/32"); !ok {
		t.Fatalf("10 backend errors from one address raised %v, want its ban", kinds(ev))
	}
	if l := g.Lockouts(); len(l) != 0 {
		t.Fatalf("backend errors locked the login: %v", l)
	}
	for range 20 {
		ev = g.backendError("alice@example.org", trustedA)
	}
	g.success("bob@example.org", addr2, "")
	for range 20 {
		ev = append(ev, g.backendError("bob@example.org", addr2)...)
	}
	if len(ev) != 0 || len(g.Bans()) != 1 {
		t.Fatalf("trusted or proven sources counted: %v, bans %v", kinds(ev), g.Bans())
	}
}
