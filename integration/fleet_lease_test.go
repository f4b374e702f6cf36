//go:build integration

package integration

import (
	"context"
	"net/netip"
	"testing"
	"time"
)

// A node that dies holding reservations (a crash: no Finish, no
// renewal) keeps a source's budget held no longer than the default
// guard.shared.lease, against the real redis-server.
func TestFleetKilledNodeLeasesEnd(t *testing.T) {
	rs := redisOnly(t, "")
	c := storeGuardConfig(t, rs.Addr()) // ip_after 3, default lease
	lease := c.Shared.Lease
	a, b := startStoreNode(t, c), startStoreNode(t, c)
	const src = "198.51.100.40"
	for i := range 3 {
		if v := a.g.Attempt("u", netip.MustParseAddr(src), "p"+string(rune('0'+i))).Begin(context.Background()); !v.Allow {
			t.Fatalf("attempt %d: %+v", i, v)
		}
	}
	if !b.heldBack(src) {
		t.Fatal("node a's reservations did not count on node b")
	}
	a.stop()
	died := time.Now()
	// The documented default (docs/fleet.md), a third of it for a
	// renewal that may have just happened, and generous slack for a
	// busy machine.
	const defaultLease = 15 * time.Second
	bound := defaultLease + defaultLease/3 + 5*time.Second
	for b.heldBack(src) {
		if time.Since(died) > bound {
			t.Fatalf("reservations of a dead node still held %v after it died (guard.shared.lease %v)", time.Since(died).Round(time.Second), lease)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("freed %v after the node died (guard.shared.lease %v)", time.Since(died).Round(100*time.Millisecond), lease)
	if v := b.g.Attempt("u", netip.MustParseAddr(src), "r").Begin(context.Background()); !v.Allow {
		t.Fatalf("after the dead node's leases ended: %+v", v)
	}
}
