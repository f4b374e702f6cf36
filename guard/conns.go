package guard

import (
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
type backendSlots struct {
	mu    sync.Mutex
	inUse int
	// perSrc counts the slots held by untrusted, unproven addresses.
	perSrc map[netip.Addr]int
	// queued counts untrusted, unproven logins waiting for a slot.
	queued int
	// wake is closed (and cleared) when a slot is released; nil while
	// nobody waits.
	wake chan struct{}
}

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
// release must be called when the backend login has finished (not when
// the session ends); it is safe to call more than once.
func (g *Guard) BackendSlotFor(ctx context.Context, addr netip.Addr) (release func(), err error) {
	b := &g.static.Backend
	if b.MaxConcurrent == 0 {
		return func() {}, nil
	}
	addr = normAddr(addr)
	s := &g.slots
	var t *time.Timer
	queued := false
	defer func() {
		if t != nil {
			t.Stop()
		}
		if queued {
			s.mu.Lock()
			s.queued--
			s.mu.Unlock()
		}
	}()
	for {
		priv := g.privileged(addr)
		s.mu.Lock()
		if priv && s.inUse < b.MaxConcurrent {
			s.inUse++
			s.mu.Unlock()
			return g.slotRelease(netip.Addr{}), nil
		}
		if !priv && s.inUse < b.MaxConcurrent-b.reserve() &&
			(b.MaxPerSource == 0 || !addr.IsValid() || s.perSrc[addr] < b.MaxPerSource) {
			s.inUse++
			if addr.IsValid() {
				s.perSrc[addr]++
			}
			s.mu.Unlock()
			return g.slotRelease(addr), nil
		}
		if t == nil {
			// First time without a slot: join the queue.
			if b.QueueWait == 0 || (!priv && s.queued >= b.Queue) {
				s.mu.Unlock()
				return nil, fmt.Errorf("%w: %d logins in progress and the queue of %d is full", ErrBackendBusy, b.MaxConcurrent, b.Queue)
			}
			if !priv {
				s.queued++
				queued = true
			}
			t = time.NewTimer(b.QueueWait)
		}
		if s.wake == nil {
			s.wake = make(chan struct{})
		}
		ch := s.wake
		s.mu.Unlock()
		select {
		case <-ch:
		case <-t.C:
			return nil, fmt.Errorf("%w: no slot within %v", ErrBackendBusy, b.QueueWait)
		case <-ctx.Done():
			return nil, fmt.Errorf("guard: waiting for a backend slot: %w", ctx.Err())
		}
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
		s.inUse--
		if src.IsValid() {
			decAddr(s.perSrc, src)
		}
		if s.wake != nil {
			close(s.wake)
			s.wake = nil
		}
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
