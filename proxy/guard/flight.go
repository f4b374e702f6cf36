package guard

import (
	"fmt"
	"net/netip"
	"time"
)

// In-flight attempts. Check alone races: N connections can all pass
// Check before the first of them fails at the backend, so a login could
// reach the backend lockout.after + N times. Begin therefore reserves
// the attempt under the same lock as its verdict, and each threshold is
// met by failures plus reservations, so at most the threshold's number
// of attempts per key is ever past the guard at once.

// flights counts reservations per counted key. Entries are deleted at
// zero, so the maps hold at most one key per attempt in flight, which
// the connection limits bound. mu covers them.
type flights struct {
	ip    map[netip.Addr]int
	net   map[netip.Prefix]int
	login map[string]int
	pair  map[pairKey]int
}

func newFlights() flights {
	return flights{
		ip:    map[netip.Addr]int{},
		net:   map[netip.Prefix]int{},
		login: map[string]int{},
		pair:  map[pairKey]int{},
	}
}

func dec[K comparable](m map[K]int, k K) {
	if m[k] <= 1 {
		delete(m, k)
		return
	}
	m[k]--
}

// Attempt is a login attempt admitted by Begin and on its way to the
// backend. Release it once its outcome has been reported with Failure,
// Success or Denied, or when the backend gave no verdict. The zero
// Attempt holds nothing; releasing twice is harmless.
type Attempt struct {
	g     *Guard
	login string
	addr  netip.Addr
	nets  []netip.Prefix
	lock  bool // counted against the login's lockout
}

// Release ends the reservation.
func (a *Attempt) Release() {
	g := a.g
	if g == nil {
		return
	}
	a.g = nil
	g.mu.Lock()
	defer g.mu.Unlock()
	dec(g.flight.ip, a.addr)
	dec(g.flight.pair, pairKey{a.login, a.addr})
	for _, p := range a.nets {
		dec(g.flight.net, p)
	}
	if a.lock {
		dec(g.flight.login, a.login)
	}
}

// Begin is Check that also reserves the attempt when it is allowed: the
// verdict counts failures plus attempts already in flight against
// ban.ip_after, ban.network_after, lockout.after and lockout.per_ip_after,
// so concurrent attempts cannot overshoot a threshold. Trusted sources
// reserve nothing (they are never banned or locked); a network where
// the login recently succeeded does not count against its lockout, and
// an exempt address only against exemption.max_failures. A refused
// verdict returns the zero Attempt.
//
// The verdict and the reservation are made under one hold of mu: between
// them another attempt's failure could lock the login (and reset its
// counter), and an attempt checked before that lock would then pass as
// one more on a locked login.
func (g *Guard) Begin(login string, addr netip.Addr) (Verdict, Attempt) {
	now := g.now()
	addr = normAddr(addr)
	login = normLogin(login)
	if !addr.IsValid() {
		return Verdict{Reason: "no client address"}, Attempt{}
	}
	r := g.rules.Load()
	nets := r.networks(addr)
	c := &r.cfg
	pk := pairKey{login, addr}

	g.mu.Lock()
	defer g.mu.Unlock()
	v := g.check(r, login, addr, now)
	if !v.Allow || r.isTrusted(addr) {
		return v, Attempt{}
	}
	count := func(w *window, ok bool, span time.Duration) int {
		if !ok {
			return 0
		}
		return w.count(now, span)
	}
	deny := func(reason string) (Verdict, Attempt) {
		return Verdict{Delay: v.Delay, Reason: reason}, Attempt{}
	}
	if lim := c.Lockout.PerIPAfter; lim > 0 {
		w, ok := g.pairFail.get(pk)
		if n := count(w, ok, c.Window) + g.flight.pair[pk]; n >= lim {
			return deny(fmt.Sprintf("%d wrong passwords and attempts in flight for this login from this address", n))
		}
	}
	lock := c.Lockout.After > 0 && !g.isKnown(r, login, addr, now)
	if lock {
		w, ok := g.loginFail.get(login)
		if n := count(w, ok, c.Lockout.Window) + g.flight.login[login]; n >= c.Lockout.After {
			return deny(fmt.Sprintf("%d wrong passwords and attempts in flight for this login", n))
		}
	}
	exempt := false
	if until, ok := g.exempt.get(addr); ok && now.Before(*until) {
		exempt = true
	}
	ipLim := c.Ban.IPAfter
	if exempt {
		ipLim = c.Exemption.MaxFailures
	}
	if ipLim > 0 {
		w, ok := g.ipFail.get(addr)
		if n := count(w, ok, c.Window) + g.flight.ip[addr]; n >= ipLim {
			return deny(fmt.Sprintf("%d failures and attempts in flight from this address", n))
		}
	}
	if !exempt && c.Ban.NetworkAfter > 0 {
		for _, p := range nets {
			w, ok := g.netFail.get(p)
			if n := count(w, ok, c.Window) + g.flight.net[p]; n >= c.Ban.NetworkAfter {
				return deny(fmt.Sprintf("%d failures and attempts in flight from %s", n, p))
			}
		}
	}
	g.flight.ip[addr]++
	g.flight.pair[pk]++
	for _, p := range nets {
		g.flight.net[p]++
	}
	if lock {
		g.flight.login[login]++
	}
	return v, Attempt{g: g, login: login, addr: addr, nets: nets, lock: lock}
}
