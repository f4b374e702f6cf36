package fleet

import (
	"context"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/mailgate/mailgate/guard"
)

// A lease set full of expired leases (nodes that died holding them) is
// pruned by the next reservation, which writes to it anyway: inflight
// only counts the live ones, so nothing else would remove them and a
// busy set would grow for as long as it is busy (review round 2, L3).
func TestFleetReservePrunesExpiredLeases(t *testing.T) {
	m := miniredis.RunT(t)
	c := testConfig(t, m.Addr())
	n := newNode(t, c, nil)
	const src = "192.0.2.77"
	key := c.Shared.KeyPrefix + "li:" + src
	past := time.Now().Add(-time.Minute).UnixMilli()
	for i := range 50 {
		if _, err := m.ZAdd(key, float64(past-int64(i)), "dead-"+strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	a := n.g.Attempt("u@example.org", netip.MustParseAddr(src), "pw")
	if v := a.Begin(context.Background()); !v.Allow {
		t.Fatalf("refused: %+v", v)
	}
	defer a.Finish(guard.Abandoned, "")
	members, err := m.ZMembers(key)
	if err != nil {
		t.Fatal(err)
	}
	if len(members) != 1 {
		t.Fatalf("lease set after a reservation: %d members %v, want only the new lease", len(members), members)
	}
}
