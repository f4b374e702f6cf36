package guard

import (
	"context"
	"net/netip"
	"testing"
	"time"
)

// racyShared is a Shared with wake-ups up whose first Begin sees the
// budget in flight while the attempt holding it ends (on another node)
// during the round trip: the wake-up arrives before the Wait verdict.
type racyShared struct {
	fakeShared
	g     *Guard
	calls int
}

func (f *racyShared) WakeFeedUp() bool { return true }
func (f *racyShared) Begin(ctx context.Context, q *SharedAttempt) (SharedVerdict, error) {
	f.mu.Lock()
	f.calls++
	n := f.calls
	f.mu.Unlock()
	if n == 1 {
		// The holder ends while this Begin is on the wire.
		f.g.WakeShared(q.Addr, q.Login, q.Nets)
		return SharedVerdict{Wait: true, Reason: "in flight"}, nil
	}
	q.Lease = "l"
	return SharedVerdict{Allow: true}, nil
}

// A wake-up that arrives during the Begin round trip is not lost: the
// wait asks again at once instead of sitting out the safety poll (5-10 s
// with wake-ups up), which the Dovecot adapter's 1 s would turn into a
// refusal of a login that may be right (review round 2, M1).
func TestSharedWakeDuringBeginNotLost(t *testing.T) {
	f := &racyShared{fakeShared: fakeShared{up: true}}
	g := sharedGuard(t, &f.fakeShared)
	g.shared = f
	f.g = g
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	a := g.Attempt("u@example.org", netip.MustParseAddr("192.0.2.9"), "pw")
	v := a.Begin(ctx)
	if !v.Allow || v.Waited {
		t.Fatalf("verdict %+v, want allowed after the wake-up that came during the round trip", v)
	}
	if f.calls != 2 {
		t.Fatalf("%d Begin calls, want 2 (the Wait, then the ask on the wake-up)", f.calls)
	}
	a.Finish(Abandoned, "")
	g.mu.Lock()
	n := len(g.sharedWait)
	g.mu.Unlock()
	if n != 0 {
		t.Errorf("%d wake queues left after the attempt", n)
	}
}
