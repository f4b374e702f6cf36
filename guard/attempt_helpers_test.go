package guard

import (
	"context"
	"net/netip"
)

// checkNow is the verdict for login from addr without a reservation.
func (g *Guard) checkNow(login string, addr netip.Addr) Verdict {
	addr, login = normAddr(addr), normLogin(login)
	if !addr.IsValid() {
		return Verdict{Reason: "no client address"}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.check(g.rules.Load(), login, addr, g.now())
}

// beginNow begins an attempt without waiting for attempts in flight: an
// attempt they hold back is refused with Waited set.
func (g *Guard) beginNow(login string, addr netip.Addr) (Verdict, *Attempt) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return g.beginWait(ctx, login, addr)
}

// beginWait begins an attempt that waits, until ctx ends, for attempts
// in flight.
func (g *Guard) beginWait(ctx context.Context, login string, addr netip.Addr) (Verdict, *Attempt) {
	a := g.Attempt(login, addr, "")
	return a.Begin(ctx), a
}
