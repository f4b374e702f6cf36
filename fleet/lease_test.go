package fleet

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/mailgate/mailgate/guard"
	"github.com/mailgate/mailgate/internal/testwait"
)

// stoppableNode is a node whose Run the test can stop: a node that dies
// holding reservations (no Finish, no renewal).
func stoppableNode(t *testing.T, c guard.Config) (*node, func()) {
	t.Helper()
	s, err := New(c.Shared, Options{})
	if err != nil {
		t.Fatal(err)
	}
	g, err := guard.New(c, guard.Options{Shared: s, HashKey: s.HashKey(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); s.Run(ctx, g) }()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); wg.Wait(); s.Close() }) }
	t.Cleanup(stop)
	testwait.For(t, "store up", s.Up)
	return &node{g, s}, stop
}

// heldBack reports whether an attempt from src on n is held back by
// attempts in flight (a short wait that runs out).
func heldBack(n *node, src string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	a := n.g.Attempt("u", netip.MustParseAddr(src), "q")
	v := a.Begin(ctx)
	a.Finish(guard.Abandoned, "")
	return !v.Allow
}

// A reservation outlives guard.shared.lease while its attempt is alive
// (the node renews it), and ends within the lease once its node is gone.
func TestFleetLeaseRenewedWhileAlive(t *testing.T) {
	m := miniredis.RunT(t)
	c := testConfig(t, m.Addr()) // ip_after 3
	// 3 s, not less: the renewal ticks every second, and a lease's
	// margin (a third of it after a late tick) must dwarf the 250 ms
	// store timeout on a busy machine.
	c.Shared.Lease = 3 * time.Second
	a, stop := stoppableNode(t, c)
	b := newNode(t, c, nil)
	const src = "198.51.100.30"
	for i := range 3 {
		if v := a.g.Attempt("u", netip.MustParseAddr(src), "p"+string(rune('0'+i))).Begin(context.Background()); !v.Allow {
			t.Fatalf("attempt %d: %+v", i, v)
		}
	}
	if a.s.Held() != 3 {
		t.Fatalf("node a renews %d leases, want 3", a.s.Held())
	}
	// Three leases later the attempts are still alive on node a.
	time.Sleep(3 * c.Shared.Lease)
	if !heldBack(b, src) {
		t.Fatal("the reservations of attempts still alive ended with guard.shared.lease: not renewed")
	}
	// Node a dies: its reservations end within one lease (plus the
	// renewal that may have just happened, and slack for a busy machine).
	stop()
	died := time.Now()
	for heldBack(b, src) {
		if time.Since(died) > 2*c.Shared.Lease+3*time.Second {
			t.Fatalf("reservations of a dead node still held %v after it died (lease %v)", time.Since(died), c.Shared.Lease)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("freed %v after the node died (lease %v)", time.Since(died).Round(10*time.Millisecond), c.Shared.Lease)
}

// The default lease is short: renewal, not the lease, covers a long
// attempt.
func TestFleetDefaultLease(t *testing.T) {
	if d := guard.Defaults().Shared.Lease; d != 15*time.Second {
		t.Fatalf("guard.shared.lease default %v, want 15s (docs/config.md, docs/fleet.md)", d)
	}
}

// A lease is renewed at the first tick at least half a tick after its
// last renewal: after a tick that came late (here 10 ms), the next one
// comes a little less than a tick after the renewal and must still
// renew it, or the lease goes two thirds of its length unrenewed
// (review round 2, L4). A lease made just before a tick waits for the
// next.
func TestFleetRenewDue(t *testing.T) {
	every := 5 * time.Second
	for _, tc := range []struct {
		age  time.Duration
		want bool
	}{
		{every - 10*time.Millisecond, true},
		{every, true},
		{2 * every, true},
		{every / 2, true},
		{every/2 - time.Millisecond, false},
		{10 * time.Millisecond, false},
		{0, false},
	} {
		if got := renewDue(tc.age, every); got != tc.want {
			t.Errorf("renewDue(%v, %v) = %v, want %v", tc.age, every, got, tc.want)
		}
	}
}
