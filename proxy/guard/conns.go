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
	limited bool // counted per address and network (untrusted source)
	// preauth and closed change under g.connMu.
	preauth bool
	closed  bool
	// pending is the login attempt in flight on this connection, if
	// any; attemptMu covers it.
	attemptMu sync.Mutex
	pending   Attempt
}

// Begin is Guard.Begin for this connection's address; the connection
// keeps the reservation until EndAttempt, the next Begin or Close, so a
// backend that gives no verdict cannot leak it.
func (c *Conn) Begin(login string) Verdict {
	c.EndAttempt()
	v, a := c.g.Begin(login, c.addr)
	c.attemptMu.Lock()
	c.pending = a
	c.attemptMu.Unlock()
	return v
}

// EndAttempt releases the attempt reserved by Begin, after its outcome
// was reported (Failure, Success, Denied) or the backend gave none.
func (c *Conn) EndAttempt() {
	c.attemptMu.Lock()
	a := c.pending
	c.pending = Attempt{}
	c.attemptMu.Unlock()
	a.Release()
}

// Accept admits or refuses a new connection from addr, after any PROXY
// header and before the TLS handshake, so refused sources cost no
// handshake. It refuses deny_networks and deny_countries, banned sources
// and connections past the limits, with a *RefusedError wrapping
// ErrDenied, ErrBanned or ErrTooManyConns. Trusted networks are only
// held to the total limits.
func (g *Guard) Accept(addr netip.Addr) (*Conn, error) {
	addr = normAddr(addr)
	if !addr.IsValid() {
		// Every listener is TCP and a PROXY LOCAL header keeps the
		// peer's address, so this is a caller bug; refuse, do not count.
		return nil, &RefusedError{ErrDenied, "no client address"}
	}
	r := g.rules.Load()
	trusted := r.isTrusted(addr)
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
		g.mu.Unlock()
		if banned {
			return nil, &RefusedError{ErrBanned, fmt.Sprintf("%s banned until %s: %s", b.Prefix, b.Until.UTC().Format(time.RFC3339), b.Reason)}
		}
	}

	// Limits: totals first (they hold for everyone), then the
	// per-source ones, which trusted networks skip (an office NAT
	// legitimately opens many connections).
	c := &r.cfg.Connections
	conn := &Conn{g: g, addr: addr, net: r.homeNet(addr), limited: !trusted, preauth: true}
	g.connMu.Lock()
	defer g.connMu.Unlock()
	switch {
	case c.MaxTotal > 0 && g.total >= c.MaxTotal:
		return nil, &RefusedError{ErrTooManyConns, fmt.Sprintf("%d connections open (guard.connections.max_total)", g.total)}
	case c.MaxPreAuth > 0 && g.preauth >= c.MaxPreAuth:
		return nil, &RefusedError{ErrTooManyConns, fmt.Sprintf("%d connections not logged in (guard.connections.max_preauth)", g.preauth)}
	}
	if conn.limited {
		ic := g.perIP[addr]
		if ic == nil {
			ic = &ipConns{}
		}
		switch {
		case c.MaxPerIP > 0 && ic.conns >= c.MaxPerIP:
			return nil, &RefusedError{ErrTooManyConns, fmt.Sprintf("%d connections from %s (guard.connections.max_per_ip)", ic.conns, addr)}
		case c.MaxPreAuthPerIP > 0 && ic.preauth >= c.MaxPreAuthPerIP:
			return nil, &RefusedError{ErrTooManyConns, fmt.Sprintf("%d connections from %s not logged in (guard.connections.max_preauth_per_ip)", ic.preauth, addr)}
		case c.MaxPerNetwork > 0 && g.perNet[conn.net] >= c.MaxPerNetwork:
			return nil, &RefusedError{ErrTooManyConns, fmt.Sprintf("%d connections from %s (guard.connections.max_per_network)", g.perNet[conn.net], conn.net)}
		}
		ic.conns++
		ic.preauth++
		g.perIP[addr] = ic
		g.perNet[conn.net]++
	}
	g.total++
	g.preauth++
	return conn, nil
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
}

// Close releases c's place in the counts. Further calls do nothing.
func (c *Conn) Close() {
	c.EndAttempt()
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
	if g.perNet[c.net]--; g.perNet[c.net] == 0 {
		delete(g.perNet, c.net)
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

// BackendSlot waits for one of backend.max_concurrent backend login
// slots. At most backend.queue logins wait, each at most
// backend.queue_wait; past either the answer is ErrBackendBusy and the
// client gets the protocol's temporary error, so a flood from allowed
// places cannot exhaust the backend's auth processes or its database.
// release must be called when the backend login has finished (not when
// the session ends); it is safe to call more than once.
func (g *Guard) BackendSlot(ctx context.Context) (release func(), err error) {
	if g.backendSem == nil {
		return func() {}, nil
	}
	var done atomic.Bool
	release = func() {
		if done.CompareAndSwap(false, true) {
			<-g.backendSem
		}
	}
	// Fast path: a free slot, no timer.
	select {
	case g.backendSem <- struct{}{}:
		return release, nil
	default:
	}
	// Queue: the waiting counter is bumped first and checked after, so
	// concurrent callers cannot overshoot backend.queue together.
	b := &g.static.Backend
	if g.backendWaiting.Add(1) > int64(b.Queue) || b.QueueWait == 0 {
		g.backendWaiting.Add(-1)
		return nil, fmt.Errorf("%w: %d logins in progress and the queue of %d is full", ErrBackendBusy, b.MaxConcurrent, b.Queue)
	}
	defer g.backendWaiting.Add(-1)
	t := time.NewTimer(b.QueueWait)
	defer t.Stop()
	select {
	case g.backendSem <- struct{}{}:
		return release, nil
	case <-t.C:
		return nil, fmt.Errorf("%w: no slot within %v", ErrBackendBusy, b.QueueWait)
	case <-ctx.Done():
		return nil, fmt.Errorf("guard: waiting for a backend slot: %w", ctx.Err())
	}
}
