package guard

import (
	"context"
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
	// Attempts waiting in BeginWait decide again.
	if g.flightWake != nil {
		close(g.flightWake)
		g.flightWake = nil
	}
}

// Begin is Check that also reserves the attempt when it is allowed: the
// verdict counts failures plus attempts already in flight against
// ban.ip_after, ban.network_after, lockout.after and lockout.per_ip_after,
// so concurrent attempts cannot overshoot a threshold. Trusted sources
// reserve nothing (they are never banned or locked); a network where
// the login recently succeeded does not count against its lockout, and
// an exempt address only against exemption.max_failures. A refused
// verdict returns the zero Attempt. Begin does not wait: an attempt that
// only attempts in flight keep from the backend is refused with Waited
// set (see BeginWait, which the proxy uses).
//
// The verdict and the reservation are made under one hold of mu: between
// them another attempt's failure could lock the login (and reset its
// counter), and an attempt checked before that lock would then pass as
// one more on a locked login.
func (g *Guard) Begin(login string, addr netip.Addr) (Verdict, Attempt) {
	addr = normAddr(addr)
	login = normLogin(login)
	if !addr.IsValid() {
		return Verdict{Reason: "no client address"}, Attempt{}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	v, a, _ := g.begin(g.rules.Load(), login, addr, g.now())
	return v, a
}

// BeginWait is Begin for the proxy: an attempt that is over a threshold
// only because of attempts still in flight (failures plus reservations
// reach it, failures alone do not) waits until one of them ends and is
// then decided again, instead of being refused. Attempts in flight are
// not failures: a busy webmail host whose parallel logins succeed must
// not be refused, and refusals counted as failures must not ban it. The
// guarantee of Begin stays: no more attempts per key than its threshold
// are ever past the guard at once. When the earlier attempts succeed,
// the source is exempt and the waiting ones go on; when they fail, the
// failures count and the waiting ones meet the ban or the lockout.
//
// A wait that ctx ends (the login deadline, shutdown) returns a refusal
// with Waited set: the proxy answers it as a failure but does not count
// it against the source.
func (g *Guard) BeginWait(ctx context.Context, login string, addr netip.Addr) (Verdict, Attempt) {
	addr = normAddr(addr)
	login = normLogin(login)
	if !addr.IsValid() {
		return Verdict{Reason: "no client address"}, Attempt{}
	}
	start := g.now()
	for {
		g.mu.Lock()
		v, a, wait := g.begin(g.rules.Load(), login, addr, g.now())
		if !wait {
			g.mu.Unlock()
			return v, a
		}
		if g.flightWake == nil {
			g.flightWake = make(chan struct{})
		}
		ch := g.flightWake
		g.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return Verdict{Waited: true, Reason: fmt.Sprintf("waited %v for attempts in flight (%s); not counted",
				g.now().Sub(start).Round(time.Millisecond), v.Reason)}, Attempt{}
		}
	}
}

// begin is Begin for a normalized, valid addr and login. wait reports
// that the attempt was refused only because of attempts in flight. mu is
// held.
func (g *Guard) begin(r *rules, login string, addr netip.Addr, now time.Time) (v Verdict, a Attempt, wait bool) {
	nets := r.networks(addr)
	c := &r.cfg
	pk := pairKey{login, addr}
	v = g.check(r, login, addr, now)
	if !v.Allow || r.isTrusted(addr) {
		return v, Attempt{}, false
	}
	count := func(w *window, ok bool, span time.Duration) int {
		if !ok {
			return 0
		}
		return w.count(now, span)
	}
	// over decides one threshold: failures alone reaching it refuse the
	// attempt (and the refusal counts); failures plus attempts in flight
	// reaching it make the attempt wait.
	var reason string
	over := func(fails, inFlight, lim int, what string) bool {
		if fails+inFlight < lim {
			return false
		}
		wait = fails < lim && inFlight > 0
		reason = fmt.Sprintf("%d failures and %d attempts in flight %s", fails, inFlight, what)
		return true
	}
	deny := func() (Verdict, Attempt, bool) {
		return Verdict{Delay: v.Delay, Reason: reason, Waited: wait}, Attempt{}, wait
	}
	if lim := c.Lockout.PerIPAfter; lim > 0 {
		w, ok := g.pairFail.get(pk)
		if over(count(w, ok, c.Window), g.flight.pair[pk], lim, "for this login from this address") {
			return deny()
		}
	}
	lock := c.Lockout.After > 0 && !g.isKnown(r, login, addr, now)
	if lock {
		w, ok := g.loginFail.get(login)
		if over(count(w, ok, c.Lockout.Window), g.flight.login[login], c.Lockout.After, "for this login") {
			return deny()
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
		if over(count(w, ok, c.Window), g.flight.ip[addr], ipLim, "from this address") {
			return deny()
		}
	}
	if !exempt && c.Ban.NetworkAfter > 0 {
		for _, p := range nets {
			w, ok := g.netFail.get(p)
			if over(count(w, ok, c.Window), g.flight.net[p], c.Ban.NetworkAfter, "from "+p.String()) {
				return deny()
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
	return v, Attempt{g: g, login: login, addr: addr, nets: nets, lock: lock}, false
}
