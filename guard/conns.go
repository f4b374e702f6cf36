package guard

import (
	"container/list"
	"context"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Conn is one admitted client connection, counted against the limits
// until Close. Its methods may be called from any goroutine.
type Conn struct {
	g       *Guard
	addr    netip.Addr
	net     netip.Prefix
	limited bool // counted per address (untrusted source)
	// capped: counted against max_total, max_preauth and the network
	// limits (untrusted and not proven when admitted).
	capped bool
	// preauth and closed change under g.connMu.
	preauth bool
	closed  bool
}

// Accept admits or refuses a new connection from addr, after any PROXY
// header and before the TLS handshake, so refused sources cost no
// handshake. It refuses deny_networks and deny_countries, banned sources
// and connections past the limits, with a *RefusedError wrapping
// ErrDenied, ErrBanned or ErrTooManyConns.
//
// The limits an attacker could fill are kept from locking out those who
// matter (issue #14, finding 5): trusted networks are held to no limit;
// a proven source (an address with a recent successful login, the
// exemption state) is held only to its own, larger per-address limits
// (connections.proven_max_per_ip, proven_max_preauth_per_ip); neither is
// counted against or refused by max_total, max_preauth, max_per_network
// or max_preauth_per_network, which bound the untrusted, unproven rest.
func (g *Guard) Accept(addr netip.Addr) (*Conn, error) {
	addr = normAddr(addr)
	if !addr.IsValid() {
		// Every listener is TCP and a PROXY LOCAL header keeps the
		// peer's address, so this is a caller bug; refuse, do not count.
		return nil, &RefusedError{ErrDenied, "no client address"}
	}
	r := g.rules.Load()
	trusted := r.isTrusted(addr)
	proven := false
	if !trusted {
		for _, p := range r.deny {
			if p.Contains(addr) {
				return nil, &RefusedError{ErrDenied, "network " + p.String() + " is in guard.deny_networks"}
			}
		}
		if len(r.denyCC) > 0 && g.country != nil {
			if cc := g.country(addr); r.denyCC[cc] {
				return nil, &RefusedError{ErrDenied, "country " + cc + " is in guard.deny_countries"}
			}
		}
		now := g.now()
		g.mu.Lock()
		b, banned := g.blockingBan(addr, now)
		proven = g.isExempt(addr, now)
		g.mu.Unlock()
		if banned {
			return nil, &RefusedError{ErrBanned, fmt.Sprintf("%s banned until %s: %s", b.Prefix, b.Until.UTC().Format(time.RFC3339), b.Reason)}
		}
	}

	c := &r.cfg.Connections
	conn := &Conn{g: g, addr: addr, net: r.homeNet(addr), limited: !trusted, capped: !trusted && !proven, preauth: true}
	maxIP, maxPreIP := c.MaxPerIP, c.MaxPreAuthPerIP
	if proven {
		maxIP, maxPreIP = roomier(maxIP, c.ProvenMaxPerIP), roomier(maxPreIP, c.ProvenMaxPreAuthPerIP)
	}
	g.connMu.Lock()
	defer g.connMu.Unlock()
	var ic *ipConns
	if conn.limited {
		ic = g.perIP[addr]
		if ic == nil {
			ic = &ipConns{}
		}
		switch {
		case maxIP > 0 && ic.conns >= maxIP:
			return nil, &RefusedError{ErrTooManyConns, fmt.Sprintf("%d connections from %s (guard.connections.%s)", ic.conns, addr, provenKey(proven, "max_per_ip"))}
		case maxPreIP > 0 && ic.preauth >= maxPreIP:
			return nil, &RefusedError{ErrTooManyConns, fmt.Sprintf("%d connections from %s not logged in (guard.connections.%s)", ic.preauth, addr, provenKey(proven, "max_preauth_per_ip"))}
		}
	}
	if conn.capped {
		switch {
		case c.MaxTotal > 0 && g.cappedTotal >= c.MaxTotal:
			return nil, &RefusedError{ErrTooManyConns, fmt.Sprintf("%d connections open from untrusted, unproven sources (guard.connections.max_total)", g.cappedTotal)}
		case c.MaxPreAuth > 0 && g.cappedPre >= c.MaxPreAuth:
			return nil, &RefusedError{ErrTooManyConns, fmt.Sprintf("%d connections from untrusted, unproven sources not logged in (guard.connections.max_preauth)", g.cappedPre)}
		case c.MaxPerNetwork > 0 && g.perNet[conn.net] >= c.MaxPerNetwork:
			return nil, &RefusedError{ErrTooManyConns, fmt.Sprintf("%d connections from %s (guard.connections.max_per_network)", g.perNet[conn.net], conn.net)}
		case c.MaxPreAuthPerNetwork > 0 && g.perNetPre[conn.net] >= c.MaxPreAuthPerNetwork:
			return nil, &RefusedError{ErrTooManyConns, fmt.Sprintf("%d connections from %s not logged in (guard.connections.max_preauth_per_network)", g.perNetPre[conn.net], conn.net)}
		}
		g.cappedTotal++
		g.cappedPre++
		g.perNet[conn.net]++
		g.perNetPre[conn.net]++
	}
	if conn.limited {
		ic.conns++
		ic.preauth++
		g.perIP[addr] = ic
	}
	g.total++
	g.preauth++
	return conn, nil
}

// roomier is the larger of two limits where 0 means none: a proven
// source never gets less room than any other.
func roomier(a, b int) int {
	if a == 0 || b == 0 {
		return 0
	}
	return max(a, b)
}

func provenKey(proven bool, key string) string {
	if proven {
		return "proven_" + key
	}
	return key
}

// isExempt reports whether addr has a success exemption now. mu is held.
func (g *Guard) isExempt(addr netip.Addr, now time.Time) bool {
	until, ok := g.exempt.get(addr)
	return ok && now.Before(*until)
}

// LoggedIn moves c out of the pre-authentication counts; call it once
// the login succeeded. Further calls do nothing.
func (c *Conn) LoggedIn() {
	g := c.g
	g.connMu.Lock()
	defer g.connMu.Unlock()
	if c.closed || !c.preauth {
		return
	}
	c.preauth = false
	g.preauth--
	if c.limited {
		g.perIP[c.addr].preauth--
	}
	if c.capped {
		g.cappedPre--
		decNet(g.perNetPre, c.net)
	}
}

func decNet(m map[netip.Prefix]int, p netip.Prefix) {
	if m[p]--; m[p] <= 0 {
		delete(m, p)
	}
}

// Close releases c's place in the counts. Further calls do nothing.
func (c *Conn) Close() {
	g := c.g
	g.connMu.Lock()
	defer g.connMu.Unlock()
	if c.closed {
		return
	}
	c.closed = true
	g.total--
	if c.preauth {
		g.preauth--
	}
	if c.capped {
		g.cappedTotal--
		decNet(g.perNet, c.net)
		if c.preauth {
			g.cappedPre--
			decNet(g.perNetPre, c.net)
		}
	}
	if !c.limited {
		return
	}
	ic := g.perIP[c.addr]
	ic.conns--
	if c.preauth {
		ic.preauth--
	}
	if ic.conns == 0 {
		delete(g.perIP, c.addr)
	}
}

// ConnStats are the current connection counts.
type ConnStats struct {
	Total, PreAuth int
	// Sources is the number of untrusted addresses with open connections.
	Sources int
}

// ConnStats returns the current connection counts (for metrics).
func (g *Guard) ConnStats() ConnStats {
	g.connMu.Lock()
	defer g.connMu.Unlock()
	return ConnStats{Total: g.total, PreAuth: g.preauth, Sources: len(g.perIP)}
}

// backendSlots hands out the backend login slots (guard.backend).
//
// Waiting logins queue in arrival order and a released slot goes
// straight to the first one that may take it. An earlier version woke
// every waiter on each release and let them race with new arrivals:
// with 64 clients on 8 slots every release woke dozens of goroutines
// for one slot, newcomers overtook logins that had waited, and some
// trusted logins lost every race until queue_wait ran out and got the
// temporary error (docs/BENCHMARKS.md, "Backend login slots under
// load").
type backendSlots struct {
	mu    sync.Mutex
	inUse int
	// perSrc counts the slots held by untrusted, unproven addresses.
	perSrc map[netip.Addr]int
	// queued counts untrusted, unproven logins waiting for a slot.
	queued int
	// waiters are the logins waiting for a slot, oldest first.
	waiters list.List // of *slotWaiter
}

// slotWaiter is one login waiting for a slot. granted and counted are
// set under backendSlots.mu before ready is closed.
type slotWaiter struct {
	addr    netip.Addr // normalized source; invalid: none
	priv    bool       // trusted or proven, as last looked at (privRecheck)
	ready   chan struct{}
	granted bool
	counted netip.Addr // the address the granted slot is counted for
}

// fits reports whether a login from addr (priv: trusted or proven) may
// take a free slot now. Called with s.mu held.
func (s *backendSlots) fits(b *BackendConfig, addr netip.Addr, priv bool) bool {
	if priv {
		return s.inUse < b.MaxConcurrent
	}
	return s.inUse < b.MaxConcurrent-b.reserve() &&
		(b.MaxPerSource == 0 || !addr.IsValid() || s.perSrc[addr] < b.MaxPerSource)
}

// take counts one slot for a login from addr and returns the address it
// is counted for (none for trusted and proven logins, which no
// per-source cap holds). Called with s.mu held.
func (s *backendSlots) take(addr netip.Addr, priv bool) netip.Addr {
	s.inUse++
	if priv || !addr.IsValid() {
		return netip.Addr{}
	}
	s.perSrc[addr]++
	return addr
}

// put returns a slot counted for src and hands the free slots on.
// Called with s.mu held.
func (s *backendSlots) put(b *BackendConfig, src netip.Addr) {
	s.inUse--
	if src.IsValid() {
		decAddr(s.perSrc, src)
	}
	s.handOn(b)
}

// handOn gives free slots to waiters: trusted and proven ones first, in
// arrival order, then the others in arrival order, each only if it may
// take one. Trusted logins going first keeps attackers' queued logins
// from delaying them even where no slot is reserved (reserved: 0, or
// max_concurrent 1). Called with s.mu held.
func (s *backendSlots) handOn(b *BackendConfig) {
	for _, priv := range []bool{true, false} {
		for e := s.waiters.Front(); e != nil && s.inUse < b.MaxConcurrent; {
			next := e.Next()
			if w := e.Value.(*slotWaiter); w.priv == priv && s.fits(b, w.addr, w.priv) {
				s.grant(e)
			}
			e = next
		}
	}
}

// grant takes a slot for the waiter at e, takes it out of the queue and
// wakes it. Called with s.mu held.
func (s *backendSlots) grant(e *list.Element) {
	w := s.remove(e)
	w.granted, w.counted = true, s.take(w.addr, w.priv)
	close(w.ready)
}

// remove takes the waiter at e out of the queue. Called with s.mu held.
func (s *backendSlots) remove(e *list.Element) *slotWaiter {
	w := s.waiters.Remove(e).(*slotWaiter)
	if !w.priv {
		s.queued--
	}
	return w
}

// privRecheck is how often a waiting login looks again at whether its
// source is trusted or proven: an address proven by a success on another
// of its connections (a mail client opens several at once) must not wait
// out queue_wait on the unreserved slots, and one whose exemption ended
// must not keep the reserve.
const privRecheck = 100 * time.Millisecond

// BackendSlot is BackendSlotFor without a source: the caller is held
// to the unreserved slots and the queue, with no per-source cap.
func (g *Guard) BackendSlot(ctx context.Context) (release func(), err error) {
	return g.BackendSlotFor(ctx, netip.Addr{})
}

// BackendSlotFor waits for one of backend.max_concurrent backend login
// slots for a login from addr. Trusted networks and proven sources (an
// address with a recent successful login) may take any free slot;
// other sources only while fewer than max_concurrent - reserved are in
// use, and one such address at most max_per_source at once, so attackers
// holding slots (each wrong password holds one for the backend's failure
// delay) cannot keep the owner of a mailbox from logging in (issue #14,
// finding 5). At most backend.queue untrusted, unproven logins wait, each
// at most backend.queue_wait (trusted and proven ones wait as long,
// outside that queue); past either the answer is ErrBackendBusy and the
// client gets the protocol's temporary error, so a flood from allowed
// places cannot exhaust the backend's auth processes or its database.
// Waiters are served in arrival order, trusted and proven ones before
// the others, skipping those the reserve or their per-source cap holds
// back; a waiter's standing is looked at again every privRecheck.
// release must be called when the backend login has finished (not when
// the session ends); it is safe to call more than once.
func (g *Guard) BackendSlotFor(ctx context.Context, addr netip.Addr) (release func(), err error) {
	b := &g.static.Backend
	if b.MaxConcurrent == 0 {
		return func() {}, nil
	}
	addr = normAddr(addr)
	priv := g.privileged(addr) // takes g.mu: never under s.mu
	s := &g.slots
	s.mu.Lock()
	// A free slot that fits is one no waiter may take (put hands every
	// other one on at once), so taking it overtakes nobody.
	if s.fits(b, addr, priv) {
		src := s.take(addr, priv)
		s.mu.Unlock()
		return g.slotRelease(src), nil
	}
	if b.QueueWait == 0 || (!priv && s.queued >= b.Queue) {
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: %d logins in progress and the queue of %d is full", ErrBackendBusy, b.MaxConcurrent, b.Queue)
	}
	w := &slotWaiter{addr: addr, priv: priv, ready: make(chan struct{})}
	e := s.waiters.PushBack(w)
	if !priv {
		s.queued++
	}
	s.mu.Unlock()

	t := time.NewTimer(b.QueueWait)
	defer t.Stop()
	recheck := time.NewTicker(privRecheck)
	defer recheck.Stop()
wait:
	for {
		select {
		case <-w.ready:
			break wait
		case <-t.C:
			err = fmt.Errorf("%w: no slot within %v", ErrBackendBusy, b.QueueWait)
			break wait
		case <-ctx.Done():
			err = fmt.Errorf("guard: waiting for a backend slot: %w", ctx.Err())
			break wait
		case <-recheck.C:
			g.restand(w, e, g.privileged(addr))
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case w.granted && (err == nil || ctx.Err() == nil):
		// Granted, perhaps just as the timer fired: a slot all the same.
		return g.slotRelease(w.counted), nil
	case w.granted:
		// Granted as the caller gave up: pass the slot on.
		s.put(b, w.counted)
		return nil, err
	}
	s.remove(e)
	return nil, err
}

// restand records that a waiting login's source is now priv (trusted or
// proven) or not, and hands it a slot if that lets it take one.
func (g *Guard) restand(w *slotWaiter, e *list.Element, priv bool) {
	s := &g.slots
	s.mu.Lock()
	defer s.mu.Unlock()
	if w.granted || w.priv == priv {
		return
	}
	w.priv = priv
	if priv {
		s.queued--
	} else {
		s.queued++
	}
	if s.fits(&g.static.Backend, w.addr, w.priv) {
		s.grant(e)
	}
}

// slotRelease returns the release of one slot; src is the address it
// was counted for, if any.
func (g *Guard) slotRelease(src netip.Addr) func() {
	var done atomic.Bool
	return func() {
		if !done.CompareAndSwap(false, true) {
			return
		}
		s := &g.slots
		s.mu.Lock()
		s.put(&g.static.Backend, src)
		s.mu.Unlock()
	}
}

func decAddr(m map[netip.Addr]int, a netip.Addr) {
	if m[a]--; m[a] <= 0 {
		delete(m, a)
	}
}

// privileged reports whether addr is trusted or proven (exempt now).
func (g *Guard) privileged(addr netip.Addr) bool {
	if !addr.IsValid() {
		return false
	}
	if g.rules.Load().isTrusted(addr) {
		return true
	}
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.isExempt(addr, now)
}
