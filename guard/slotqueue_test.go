package guard

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailgate/mailgate/internal/testwait"
)

func (g *Guard) slotsWaiting() int {
	g.slots.mu.Lock()
	defer g.slots.mu.Unlock()
	return g.slots.waiters.Len()
}

// Waiting logins get released slots in the order they came: none waits
// out queue_wait while later arrivals get through.
func TestBackendSlotFIFO(t *testing.T) {
	g, _ := newTestGuard(t, func(c *Config) {
		c.Backend = BackendConfig{MaxConcurrent: 1, Queue: 16, QueueWait: 10 * time.Second}
	})
	ctx := t.Context()
	r0, err := g.BackendSlot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const n = 6
	granted := make(chan int, n)
	release := make([]chan struct{}, n)
	for i := range n {
		release[i] = make(chan struct{})
		go func() {
			r, err := g.BackendSlot(ctx)
			if err != nil {
				t.Errorf("waiter %d: %v", i, err)
				granted <- -1
				return
			}
			granted <- i
			<-release[i]
			r()
		}()
		testwait.For(t, "waiter to queue", func() bool { return g.slotsWaiting() == i+1 })
	}
	r0()
	for want := range n {
		if got := <-granted; got != want {
			t.Fatalf("slot %d went to waiter %d, want %d (arrival order)", want, got, want)
		}
		close(release[want])
	}
	testwait.For(t, "all slots back", func() bool { return g.slotsInUse() == 0 })
}

// A released slot goes to the login that waited for it, not to one that
// arrives just after the release.
func TestBackendSlotNoOvertaking(t *testing.T) {
	g, _ := newTestGuard(t, func(c *Config) {
		c.Backend = BackendConfig{MaxConcurrent: 1, Queue: 4, QueueWait: 10 * time.Second}
	})
	ctx := t.Context()
	r0, err := g.BackendSlot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan func(), 1)
	go func() {
		r, err := g.BackendSlot(ctx)
		if err != nil {
			t.Error(err)
		}
		got <- r
	}()
	testwait.For(t, "waiter to queue", func() bool { return g.slotsWaiting() == 1 })
	r0()
	// The waiter holds the slot now, before its goroutine even ran: a
	// newcomer finds none free, and the queue is empty.
	if q, w := g.slotsQueued(), g.slotsWaiting(); q != 0 || w != 0 {
		t.Fatalf("after the hand-off: %d queued, %d waiting; want 0, 0", q, w)
	}
	gone, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := g.BackendSlot(gone); !errors.Is(err, context.Canceled) {
		t.Fatalf("newcomer after the release = %v, want to find no free slot", err)
	}
	if r := <-got; r != nil {
		r()
	}
	if n := g.slotsInUse(); n != 0 {
		t.Fatalf("%d slots held after all released", n)
	}
}

// A trusted login does not wait behind an unproven one that the reserve
// keeps from the freed slot: it gets the slot, and the unproven login
// gets the next one it may take.
func TestBackendSlotQueueSkipsHeldBack(t *testing.T) {
	g, _ := newTestGuard(t, func(c *Config) {
		c.TrustedNetworks = []string{"203.0.113.0/24"}
		c.Backend = BackendConfig{MaxConcurrent: 2, Reserved: 1, Queue: 4, QueueWait: 10 * time.Second}
	})
	ctx := t.Context()
	rU, err := g.BackendSlotFor(ctx, addr1) // the one unreserved slot
	if err != nil {
		t.Fatal(err)
	}
	rT, err := g.BackendSlotFor(ctx, trustedA) // the reserved one
	if err != nil {
		t.Fatal(err)
	}
	type res struct {
		who string
		r   func()
	}
	got := make(chan res, 2)
	wait := func(who string, a netip.Addr) {
		r, err := g.BackendSlotFor(ctx, a)
		if err != nil {
			t.Errorf("%s: %v", who, err)
		}
		got <- res{who, r}
	}
	go wait("unproven", addr2)
	testwait.For(t, "unproven login to queue", func() bool { return g.slotsWaiting() == 1 })
	go wait("trusted", netip.MustParseAddr("203.0.113.9"))
	testwait.For(t, "trusted login to queue", func() bool { return g.slotsWaiting() == 2 })

	rT() // one slot free, but only for trusted and proven logins
	first := <-got
	if first.who != "trusted" {
		t.Fatalf("freed reserved slot went to the %s login, want the trusted one", first.who)
	}
	if n := g.slotsWaiting(); n != 1 {
		t.Fatalf("%d waiting, want the unproven login still waiting", n)
	}
	rU()
	first.r() // both free: the unproven login may take one
	if second := <-got; second.who != "unproven" {
		t.Fatalf("second grant to %q", second.who)
	} else {
		second.r()
	}
	if n := g.slotsInUse(); n != 0 {
		t.Fatalf("%d slots held after all released", n)
	}
}

// A login that queued as unproven gets a reserved slot once its address
// is proven by a success on another connection (a mail client opens
// several at once), instead of waiting out queue_wait while attackers
// hold the unreserved slots.
func TestBackendSlotWaiterProvenWhileWaiting(t *testing.T) {
	g, _ := newTestGuard(t, func(c *Config) {
		c.Backend = BackendConfig{MaxConcurrent: 4, Reserved: 2, Queue: 4, QueueWait: 10 * time.Second}
	})
	ctx := t.Context()
	for range 2 { // the attacker holds both unreserved slots
		r, err := g.BackendSlotFor(ctx, addr2)
		if err != nil {
			t.Fatal(err)
		}
		defer r()
	}
	got := make(chan error, 1)
	go func() {
		r, err := g.BackendSlotFor(ctx, addr1)
		if err == nil {
			r()
		}
		got <- err
	}()
	testwait.For(t, "the unproven login to queue", func() bool { return g.slotsQueued() == 1 })
	g.success("alice@example.org", addr1, "")
	if err := <-got; err != nil {
		t.Fatalf("login proven while waiting: %v, want a reserved slot", err)
	}
}

// Where no slot is reserved (max_concurrent 1 here), a trusted login
// still goes before unproven logins that queued earlier.
func TestBackendSlotTrustedFirstWithoutReserve(t *testing.T) {
	g, _ := newTestGuard(t, func(c *Config) {
		c.TrustedNetworks = []string{"203.0.113.0/24"}
		c.Backend = BackendConfig{MaxConcurrent: 1, Reserved: 0, Queue: 8, QueueWait: 10 * time.Second}
	})
	ctx := t.Context()
	r0, err := g.BackendSlotFor(ctx, addrFar)
	if err != nil {
		t.Fatal(err)
	}
	order := make(chan string, 3)
	release := make(chan struct{})
	wait := func(who string, a netip.Addr) {
		r, err := g.BackendSlotFor(ctx, a)
		if err != nil {
			t.Errorf("%s: %v", who, err)
			order <- "error"
			return
		}
		order <- who
		<-release
		r()
	}
	go wait("unproven 1", addr1)
	testwait.For(t, "first unproven login to queue", func() bool { return g.slotsWaiting() == 1 })
	go wait("unproven 2", addr2)
	testwait.For(t, "second unproven login to queue", func() bool { return g.slotsWaiting() == 2 })
	go wait("trusted", trustedA)
	testwait.For(t, "trusted login to queue", func() bool { return g.slotsWaiting() == 3 })
	r0()
	for _, want := range []string{"trusted", "unproven 1", "unproven 2"} {
		if got := <-order; got != want {
			t.Fatalf("slot went to %q, want %q", got, want)
		}
		release <- struct{}{}
	}
}

// Many logins at once, some giving up early: never more slots out than
// max_concurrent, never more than max_per_source for one unproven
// address, and every slot and queue place back at the end.
func TestBackendSlotStress(t *testing.T) {
	const maxConc, perSrc = 4, 1
	g, _ := newTestGuard(t, func(c *Config) {
		c.TrustedNetworks = []string{"203.0.113.0/24"}
		c.Backend = BackendConfig{MaxConcurrent: maxConc, Reserved: 1, MaxPerSource: perSrc, Queue: 8, QueueWait: 30 * time.Millisecond}
	})
	addrs := []netip.Addr{addr1, addr2, addrFar, trustedA, netip.MustParseAddr("192.0.2.77")}
	var out atomic.Int32
	var mu sync.Mutex
	held := map[netip.Addr]int{}
	var granted, busy, gaveUp atomic.Int32
	var wg sync.WaitGroup
	for w := range 24 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for range 60 {
				a := addrs[rng.IntN(len(addrs))]
				ctx, cancel := context.WithTimeout(t.Context(), time.Duration(rng.IntN(40))*time.Millisecond)
				r, err := g.BackendSlotFor(ctx, a)
				cancel()
				switch {
				case errors.Is(err, ErrBackendBusy):
					busy.Add(1)
					continue
				case err != nil:
					gaveUp.Add(1)
					continue
				}
				granted.Add(1)
				if n := out.Add(1); n > maxConc {
					t.Errorf("%d slots out, max_concurrent %d", n, maxConc)
				}
				if a != trustedA {
					mu.Lock()
					held[a]++
					if held[a] > perSrc {
						t.Errorf("%v holds %d slots, max_per_source %d", a, held[a], perSrc)
					}
					mu.Unlock()
				}
				time.Sleep(time.Duration(rng.IntN(500)) * time.Microsecond)
				if a != trustedA {
					mu.Lock()
					held[a]--
					mu.Unlock()
				}
				out.Add(-1)
				r()
			}
		}()
	}
	wg.Wait()
	if n, q, w := g.slotsInUse(), g.slotsQueued(), g.slotsWaiting(); n != 0 || q != 0 || w != 0 {
		t.Fatalf("after the storm: %d slots in use, %d queued, %d waiting; want all 0", n, q, w)
	}
	if granted.Load() == 0 {
		t.Fatal("no login got a slot")
	}
	t.Logf("granted %d, busy %d, gave up %d", granted.Load(), busy.Load(), gaveUp.Load())
}
