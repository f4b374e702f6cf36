package guard

import (
	"context"
	"fmt"
	"net/netip"
	"reflect"
	"time"
)

// In-flight attempts. A verdict alone races: N connections can all pass
// it before the first of them fails at the backend, so a login could
// reach the backend lockout.after + N times. Attempt.Begin therefore
// reserves the attempt under the same lock as its verdict, and each threshold is
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

// Outcome is how a login attempt ended, as the proxy reports it to
// Attempt.Finish.
type Outcome int

const (
	// Abandoned: nobody judged the password (the client left, the login
	// deadline or shutdown came first, no backend slot, the backend was
	// known down). Nothing is counted; the reservation is released.
	Abandoned Outcome = iota
	// Passed: the backend accepted the password. The source becomes
	// exempt, the login's network known, and the compromise signal is
	// checked (an EventCompromised with Refuse set means: drop the
	// session).
	Passed
	// WrongPassword: the backend refused the password. It counts
	// towards the source's ban and the login's lockout.
	WrongPassword
	// Refused: refused before the backend for any cause but a wrong
	// password (unusable credentials, policy, the guard's own verdict).
	// It counts towards the source's ban, never the login's lockout, so
	// a refused source cannot lock the owner out. A refusal with
	// Verdict.Waited set is not counted.
	Refused
	// BackendError: the backend failed or timed out after the decision.
	// It counts against the source (not the login), so it cannot be
	// repeated for free; trusted and proven sources are not counted.
	BackendError
)

// Attempt is one login attempt: the one handle through which the proxy
// asks the guard (Begin) and reports the outcome (Finish). Finish
// records the outcome and releases the reservation in one call, once;
// later calls do nothing, so the owner of an attempt can finish it as
// Abandoned when its connection closes without caring whether the login
// already finished it. A nil *Attempt (no guard) allows everything and
// records nothing. An Attempt is used by one goroutine at a time.
type Attempt struct {
	g        *Guard
	login    string // normalized
	addr     netip.Addr
	password string // hashed by Finish, never kept past it
	waited   bool   // Begin refused it only for attempts in flight
	finished bool
	// The reservation made by an allowing Begin; reserved false: none.
	reserved bool
	nets     []netip.Prefix
	lock     bool // counted against the login's lockout
	// sq: decided by the shared store (Options.Shared), which Finish
	// then tells; nil: decided locally.
	sq *SharedAttempt
}

// Attempt starts the handle for one login attempt of login from addr
// with password. It asks nothing and reserves nothing: Begin does. An
// attempt refused before the question (unusable credentials) goes
// straight to Finish(Refused). On a nil Guard it returns nil.
func (g *Guard) Attempt(login string, addr netip.Addr, password string) *Attempt {
	if g == nil {
		return nil
	}
	return &Attempt{g: g, login: normLogin(login), addr: normAddr(addr), password: password}
}

// Begin is the one question to the guard about a login attempt: may it
// go to the backend, and how long does the tarpit hold it first
// (Verdict.Delay, whatever the answer). An allowed attempt is reserved
// under the same lock as its verdict, and each threshold (ban.ip_after,
// ban.network_after, lockout.after, lockout.per_ip_after) is met by
// failures plus attempts in flight, so concurrent attempts cannot
// overshoot it. Trusted sources reserve nothing (they are never banned
// or locked); a network where the login recently succeeded does not
// count against its lockout, and an exempt address only against
// exemption.max_failures.
//
// An attempt over a threshold only because of attempts still in flight
// (failures plus reservations reach it, failures alone do not) waits
// until one of them ends and is then decided again, instead of being
// refused: a busy webmail host whose parallel logins succeed must not be
// refused, and refusals counted as failures must not ban it. When the
// earlier attempts succeed, the source is exempt and the waiting ones go
// on; when they fail, the failures count and the waiting ones meet the
// ban or the lockout. A wait that ctx ends (the login deadline,
// shutdown; an already cancelled ctx does not wait at all) returns a
// refusal with Waited set, which Finish does not count.
//
// Call Begin once per attempt; a nil *Attempt allows at once.
func (a *Attempt) Begin(ctx context.Context) Verdict {
	if a == nil {
		return Verdict{Allow: true}
	}
	if !a.addr.IsValid() {
		return Verdict{Reason: "no client address"}
	}
	a.release() // a second Begin must not leak the first reservation
	g := a.g
	if g.shared != nil {
		if a.sq != nil {
			a.finishShared(Abandoned, "", "")
		}
		if v, ok := a.beginShared(ctx); ok {
			return v
		}
	}
	var start time.Time // of the first wait
	for {
		// The clock is read under mu, once a decision: the verdict and
		// the reservation must see the same moment.
		g.mu.Lock()
		now := g.now()
		v, wait := g.begin(g.rules.Load(), a, now)
		if !wait {
			g.mu.Unlock()
			return v
		}
		if start.IsZero() {
			start = now
		}
		keys := a.keys(g.rules.Load())
		chs := g.wakeOn(keys)
		g.mu.Unlock()
		woken := waitAny(ctx, chs)
		g.mu.Lock()
		g.unwait(keys, chs)
		g.mu.Unlock()
		if !woken {
			a.waited = true
			return Verdict{Waited: true, Reason: fmt.Sprintf("waited %v for attempts in flight (%s); not counted",
				g.now().Sub(start).Round(time.Millisecond), v.Reason)}
		}
	}
}

// wakeKey names what an attempt in flight counts against: its address
// (netip.Addr, which also covers the (login, address) pair), its
// networks (netip.Prefix) or its login (loginWake).
type wakeKey any

// loginWake is a login as a wakeKey.
type loginWake string

// keys are the wake keys of a: every count in flight that can hold it
// back (address, pair, networks, login) ends on one of them.
func (a *Attempt) keys(r *rules) []wakeKey {
	keys := []wakeKey{a.addr, loginWake(a.login)}
	for _, p := range r.networks(a.addr) {
		keys = append(keys, p)
	}
	return keys
}

// wakeOn returns the channels closed when an attempt in flight on any of
// keys ends, and counts the caller as waiting on each. mu is held.
func (g *Guard) wakeOn(keys []wakeKey) []chan struct{} {
	if g.flightWake == nil {
		g.flightWake = map[wakeKey]*waiters{}
	}
	chs := make([]chan struct{}, len(keys))
	for i, k := range keys {
		w, ok := g.flightWake[k]
		if !ok {
			w = &waiters{ch: make(chan struct{})}
			g.flightWake[k] = w
		}
		w.n++
		chs[i] = w.ch
	}
	return chs
}

// unwait ends a wait that wakeOn began: a key nobody waits on any more
// leaves the map, so waits that end by their deadline (no attempt on the
// key ever ended) do not leave an entry per address behind. mu is held.
func (g *Guard) unwait(keys []wakeKey, chs []chan struct{}) {
	for i, k := range keys {
		// A closed channel's entry is gone already, or replaced by a
		// newer wait's: only the caller's own entry is counted down.
		if w, ok := g.flightWake[k]; ok && w.ch == chs[i] {
			if w.n--; w.n == 0 {
				delete(g.flightWake, k)
			}
		}
	}
}

// wake wakes the attempts waiting on keys. mu is held.
func (g *Guard) wake(keys []wakeKey) {
	for _, k := range keys {
		if w, ok := g.flightWake[k]; ok {
			close(w.ch)
			delete(g.flightWake, k)
		}
	}
}

// waiters are the attempts waiting on one key, and the channel that
// wakes them.
type waiters struct {
	ch chan struct{}
	n  int
}

// waitAny waits until one of chs is closed (true) or ctx ends (false).
func waitAny(ctx context.Context, chs []chan struct{}) bool {
	cases := make([]reflect.SelectCase, 0, len(chs)+1)
	cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ctx.Done())})
	for _, ch := range chs {
		cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ch)})
	}
	i, _, _ := reflect.Select(cases)
	return i != 0
}

// Finish records how the attempt ended and releases its reservation,
// once: the outcome is counted first, so for a moment it is counted
// both in flight and failed, which errs on the safe side, never the
// reverse. It returns the bans, lockouts and compromise signals the
// outcome raised. country is the ISO code the policy placed the client
// in ("" when unknown); only Passed uses it.
func (a *Attempt) Finish(o Outcome, country string) []Event {
	if a == nil || a.finished {
		return nil
	}
	a.finished = true
	g, pw := a.g, a.password
	a.password = ""
	if a.sq != nil {
		return a.finishShared(o, country, pw)
	}
	var evs []Event
	switch o {
	case Passed:
		evs = g.successSeen(a.login, a.addr, country, g.earlierCountries(a.login))
	case WrongPassword:
		evs = g.failure(a.login, a.addr, pw)
	case Refused:
		if !a.waited {
			evs = g.denied(a.login, a.addr, pw)
		}
	case BackendError:
		evs = g.backendError(a.login, a.addr)
	}
	a.release()
	if g.shared != nil && len(evs) > 0 {
		g.mu.Lock()
		g.noteUnsynced(evs, g.now())
		g.mu.Unlock()
	}
	return evs
}

// Fingerprint is Guard.Fingerprint of the attempt's password, for the
// log line of a wrong password; "" once finished or without a guard.
func (a *Attempt) Fingerprint() string {
	if a == nil || a.finished {
		return ""
	}
	return a.g.Fingerprint(a.password)
}

// release ends the reservation.
func (a *Attempt) release() {
	if !a.reserved {
		return
	}
	a.reserved = false
	g := a.g
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
	// Attempts waiting in Begin on what this one held decide again.
	keys := []wakeKey{a.addr, loginWake(a.login)}
	for _, p := range a.nets {
		keys = append(keys, p)
	}
	g.wake(keys)
}

// begin decides a (valid address) once and, when it is allowed, reserves
// it. wait reports that the attempt was refused only because of attempts
// in flight. mu is held. The verdict and the reservation are made under
// one hold of mu: between them another attempt's failure could lock the
// login (and reset its counter), and an attempt checked before that lock
// would then pass as one more on a locked login.
func (g *Guard) begin(r *rules, a *Attempt, now time.Time) (v Verdict, wait bool) {
	login, addr := a.login, a.addr
	nets := r.networks(addr)
	c := &r.cfg
	pk := pairKey{login, addr}
	v = g.check(r, login, addr, now)
	if !v.Allow || r.isTrusted(addr) {
		return v, false
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
	deny := func() (Verdict, bool) {
		return Verdict{Delay: v.Delay, Reason: reason, Waited: wait}, wait
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
	a.reserved, a.nets, a.lock = true, nets, lock
	return v, false
}
