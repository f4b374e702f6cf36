package guard

// The shared store (docs/fleet.md). Several mailgate nodes behind one
// load balancer share their failure windows, reservations, bans,
// lockouts, exemptions, known networks and countries through a store
// (package fleet: Redis or Valkey) that Options.Shared plugs in here. The
// seam is small on purpose:
//
//   - Attempt.Begin asks the store once (Shared.Begin) for an untrusted
//     source; the store decides and reserves atomically, across nodes.
//   - Attempt.Finish tells the store once (Shared.Finish): it records the
//     outcome, releases the reservation and returns the events it raised,
//     which this node logs (each event is logged once, by the node whose
//     attempt raised it).
//   - A wait for attempts in flight on other nodes is woken by the store
//     (WakeShared, when one of them ends; WakeAllShared, when the store's
//     wake-ups resume or stop) and polls the store only while the store
//     cannot wake it (WakeFeed), with a capped back-off.
//   - Accept never asks the store: it reads the local ban table, which
//     the store's change feed keeps a copy of (ApplyBan, ApplyLift,
//     ReplaceBans), together with the bans this node raised itself.
//   - The store unreachable (Shared.Up false, or a call failing): the
//     node decides on its own in-memory counters (fail open), or refuses
//     logins with fail_closed; bans it makes meanwhile are kept for the
//     store (TakeUnsynced) and pushed when it returns.
//
// Trusted sources never reach the store: they are never banned or
// locked, only slowed down by this node's counters.

import (
	"context"
	"crypto/sha256"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"time"
)

// Shared is a store that the guards of several nodes share (package
// fleet). Its methods are safe for concurrent use; each does at most one
// round trip and bounds it by its own timeout as well as ctx.
type Shared interface {
	// Up reports whether the store answered the last call or probe.
	Up() bool
	// FailClosed reports whether logins are refused while !Up().
	FailClosed() bool
	// Begin decides the attempt and, when it is allowed, reserves it
	// with a lease that ends by itself (q.Lease is set).
	Begin(ctx context.Context, q *SharedAttempt) (SharedVerdict, error)
	// Finish records outcome o of an attempt that Begin decided (a lease
	// held or not), releases its lease, and returns the events raised.
	Finish(ctx context.Context, q *SharedAttempt, o Outcome, country string) ([]Event, error)
	// AddBan stores an admin ban (or a ban this node made while the
	// store was down) and announces it on the feed.
	AddBan(ctx context.Context, b Ban) error
	// RemoveBan lifts the ban of exactly p fleet-wide and forgets its
	// escalation history; it reports whether there was one.
	RemoveBan(ctx context.Context, p netip.Prefix) (bool, error)
	// Unlock lifts login's lockout fleet-wide and forgets its failures
	// and countries; it reports whether it was locked.
	Unlock(ctx context.Context, login string) (bool, error)
	// Lockouts lists the locked logins.
	Lockouts(ctx context.Context) ([]Lockout, error)
}

// SharedAttempt is one login attempt as the store sees it.
type SharedAttempt struct {
	// Config is the configuration the attempt is decided under.
	Config *Config
	Login  string     // normalized
	Addr   netip.Addr // normalized, valid, untrusted
	// Nets are the networks Addr is counted and banned in; Home is the
	// one remembered for the login's known networks.
	Nets []netip.Prefix
	Home netip.Prefix
	// Hash is the keyed hash of (login, password): the same on every
	// node when they share Options.HashKey.
	Hash uint64
	// Lease names the reservation Begin made; "" when none.
	Lease string
}

// SharedVerdict is the store's answer to Begin.
type SharedVerdict struct {
	// Allow: reserved, may go to the backend.
	Allow bool
	// Wait: over a threshold only because of attempts in flight.
	Wait bool
	// Locked: refused because the login is locked.
	Locked bool
	// Reason says why not, for the log.
	Reason string
	// IPFails and PairFails are the distinct failures of the address and
	// the (login, address) pair within guard.window, for the tarpit.
	IPFails, PairFails int
}

// WakeFeed is a Shared that wakes waits itself: while WakeFeedUp, the
// end of an attempt on any node that a wait of this node is held back by
// reaches WakeShared, so the wait need not poll.
type WakeFeed interface {
	WakeFeedUp() bool
}

// A wait for attempts in flight on other nodes asks the store again when
// woken (the end of an attempt on the same keys, on this node or, through
// the store's wake-ups, another), and otherwise after a poll interval:
// while the store cannot wake it, sharedPoll doubling up to sharedPollMax
// (a random half of it added, so waiters do not ask all at once); while
// it can, sharedSafetyPoll, which only catches a node that died holding
// the budget (its leases end without a release to announce).
const (
	sharedPoll       = 100 * time.Millisecond
	sharedPollMax    = 2 * time.Second
	sharedSafetyPoll = 5 * time.Second
)

// nextPoll is the wait before asking the store again, and the next base:
// base doubled up to sharedPollMax, sharedSafetyPoll while the store
// wakes waits itself. r in [0,1) is the random part.
func nextPoll(base time.Duration, feedUp bool, r float64) (wait, next time.Duration) {
	if feedUp {
		return sharedSafetyPoll + time.Duration(r*float64(sharedSafetyPoll)), base
	}
	if base <= 0 {
		base = sharedPoll
	}
	return base + time.Duration(r*float64(base/2)), min(2*base, sharedPollMax)
}

// WakeShared wakes one of this node's waits per key of an attempt (its
// address, login and networks) that ended on another node.
func (g *Guard) WakeShared(addr netip.Addr, login string, nets []netip.Prefix) {
	keys := []wakeKey{addr, loginWake(login)}
	for _, p := range nets {
		keys = append(keys, p)
	}
	g.mu.Lock()
	g.wakeShared(keys)
	g.mu.Unlock()
}

// WakeAllShared wakes every wait for attempts on other nodes: the
// store's wake-ups resumed (one may have been missed) or stopped (the
// waits must poll).
func (g *Guard) WakeAllShared() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, q := range g.sharedWait {
		for _, ch := range q {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
}

// queueShared adds ch to the waiters on each of keys. mu is held.
func (g *Guard) queueShared(keys []wakeKey, ch chan struct{}) {
	if g.sharedWait == nil {
		g.sharedWait = map[wakeKey][]chan struct{}{}
	}
	for _, k := range keys {
		g.sharedWait[k] = append(g.sharedWait[k], ch)
	}
}

// unqueueShared removes ch from the waiters on keys. mu is held.
func (g *Guard) unqueueShared(keys []wakeKey, ch chan struct{}) {
	for _, k := range keys {
		q := slices.DeleteFunc(g.sharedWait[k], func(c chan struct{}) bool { return c == ch })
		if len(q) == 0 {
			delete(g.sharedWait, k)
		} else {
			g.sharedWait[k] = q
		}
	}
}

// wakeShared wakes the longest waiter on each of keys. mu is held.
func (g *Guard) wakeShared(keys []wakeKey) {
	for _, k := range keys {
		// The first waiter not yet woken (a waiter sits on several keys
		// and may have been woken through another).
		q := g.sharedWait[k]
		for len(q) > 0 {
			ch := q[0]
			q = q[1:]
			select {
			case ch <- struct{}{}:
			default:
				continue
			}
			break
		}
		if len(q) == 0 {
			delete(g.sharedWait, k)
		} else {
			g.sharedWait[k] = q
		}
	}
}

// hashKeyFrom makes the 32-byte key of the failure hashes from a fleet
// secret, so every node counts one wrong password as one.
func hashKeyFrom(secret []byte) [32]byte {
	h := sha256.New()
	h.Write([]byte("mailgate guard failure hash key\x00"))
	h.Write(secret)
	var k [32]byte
	copy(k[:], h.Sum(nil))
	return k
}

// beginShared is Begin against the store. ok false: the store is down or
// failed, and the caller decides locally (fail open).
func (a *Attempt) beginShared(ctx context.Context) (v Verdict, ok bool) {
	g, s := a.g, a.g.shared
	r := g.rules.Load()
	if r.isTrusted(a.addr) {
		return Verdict{}, false
	}
	if !s.Up() {
		if s.FailClosed() {
			// Not counted (Waited): the store's absence says nothing
			// against the source, and must not ban it.
			a.waited = true
			return Verdict{Waited: true, Reason: "shared store down and guard.shared.fail_closed is set"}, true
		}
		return Verdict{}, false
	}
	// The local copy of the bans first: it holds admin bans of any
	// length and costs no round trip.
	now := g.now()
	g.mu.Lock()
	b, banned := g.blockingBan(a.addr, now)
	g.mu.Unlock()
	if banned {
		// Finished locally (no a.sq): a banned source's refusal adds
		// nothing the store needs, and costs no round trip.
		return Verdict{Reason: banReason(b)}, true
	}
	q := &SharedAttempt{Config: &r.cfg, Login: a.login, Addr: a.addr, Nets: r.networks(a.addr), Home: r.homeNet(a.addr)}
	var start time.Time
	var poll time.Duration
	woken := false
	feed, _ := s.(WakeFeed)
	keys := a.keys(r)
	for {
		// Queued before the round trip, not after it: an attempt on the
		// same keys that ends while Begin is on the wire wakes ch (its
		// buffer of 1 keeps the wake-up), so a Wait verdict asks again at
		// once instead of sitting out the safety poll (review round 2,
		// M1). Woken through several keys, or not at all, ch is removed
		// from every queue after the verdict.
		ch := make(chan struct{}, 1)
		g.mu.Lock()
		g.queueShared(keys, ch)
		g.mu.Unlock()
		// The round trip is bounded by the store's own timeout; ctx
		// bounds only the wait for attempts in flight.
		sv, err := s.Begin(context.WithoutCancel(ctx), q)
		passOn := false
		if err != nil || !sv.Wait {
			g.mu.Lock()
			g.unqueueShared(keys, ch)
			select {
			case <-ch:
				// Woken during the round trip but not waiting: the
				// store may have decided before the place was freed,
				// so the next waiter asks (a wake-up too many costs a
				// round trip, one too few the safety poll).
				passOn = true
			default:
			}
			g.mu.Unlock()
		}
		if err != nil {
			if woken || passOn {
				g.mu.Lock()
				g.wakeShared(keys)
				g.mu.Unlock()
			}
			if ctx.Err() != nil && !start.IsZero() {
				break
			}
			if s.FailClosed() {
				a.waited = true
				return Verdict{Waited: true, Reason: "shared store failed and guard.shared.fail_closed is set: " + err.Error()}, true
			}
			return Verdict{}, false
		}
		delay := r.tarpit(max(sv.IPFails, sv.PairFails))
		if !sv.Wait {
			if woken && !sv.Allow || passOn {
				// Woken, but refused for another reason now (the ending
				// attempt failed): the place it freed is not taken, so
				// the next waiter asks in turn.
				g.mu.Lock()
				g.wakeShared(keys)
				g.mu.Unlock()
			}
			a.sq = q
			return Verdict{Allow: sv.Allow, Reason: sv.Reason, Locked: sv.Locked, Delay: delay}, true
		}
		if start.IsZero() {
			start = g.now()
		}
		// Woken by the end of an attempt on the same keys, on this node
		// or another (one waiter per ending attempt: each wake-up costs
		// a round trip, and one ending attempt frees one place), or by
		// the poll.
		wait, next := nextPoll(poll, feed != nil && feed.WakeFeedUp(), rand.Float64())
		poll = next
		t := time.NewTimer(wait)
		woken = false
		select {
		case <-ctx.Done():
		case <-ch:
			woken = true
		case <-t.C:
		}
		t.Stop()
		g.mu.Lock()
		g.unqueueShared(keys, ch)
		g.mu.Unlock()
		if ctx.Err() != nil {
			break
		}
	}
	a.waited = true
	return Verdict{Waited: true, Reason: "waited " + g.now().Sub(start).Round(time.Millisecond).String() +
		" for attempts in flight on the fleet; not counted"}, true
}

func banReason(b Ban) string {
	return b.Prefix.String() + " banned until " + b.Until.UTC().Format(time.RFC3339) + ": " + b.Reason
}

// finishShared is Finish for an attempt the store decided. A store that
// fails here leaves the lease to expire and the outcome is recorded
// locally instead, so it still counts on this node.
func (a *Attempt) finishShared(o Outcome, country, password string) []Event {
	g, s, q := a.g, a.g.shared, a.sq
	a.sq = nil
	r := g.rules.Load()
	now := g.now()
	if o == WrongPassword || o == Refused && !a.waited {
		g.mu.Lock()
		g.addPenalty(r, a.addr, now) // per node: it pads this node's replies
		g.mu.Unlock()
	}
	if o == Refused && a.waited && q.Lease == "" {
		return nil
	}
	switch o {
	case WrongPassword, Refused:
		q.Hash = g.hash(a.login, password)
	case BackendError:
		n := backendErrSeq.Add(1)
		q.Hash = g.hash(a.login, "\x00backend-error\x00"+strconv.FormatUint(n, 16)+now.String())
	}
	if o == Refused && a.waited {
		o = Abandoned // release only
	}
	evs, err := s.Finish(context.Background(), q, o, country)
	defer func() {
		keys := []wakeKey{a.addr, loginWake(a.login)}
		for _, p := range q.Nets {
			keys = append(keys, p)
		}
		g.mu.Lock()
		g.wakeShared(keys)
		g.mu.Unlock()
	}()
	if err != nil {
		switch o {
		case Passed:
			evs = g.success(a.login, a.addr, country)
		case WrongPassword:
			evs = g.failure(a.login, a.addr, password)
		case Refused:
			evs = g.denied(a.login, a.addr, password)
		case BackendError:
			evs = g.backendError(a.login, a.addr)
		}
		g.mu.Lock()
		g.noteUnsynced(evs, now)
		g.mu.Unlock()
		return evs
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if o == Passed && r.cfg.Exemption.Duration > 0 {
		// This node's connection limits treat the source as proven.
		*g.exempt.update(a.addr) = now.Add(r.cfg.Exemption.Duration)
	}
	for _, e := range evs {
		if e.Kind == EventBanned {
			// Refused here at once; the other nodes learn it from the feed.
			g.applyBan(r, Ban{Prefix: e.Prefix, Created: now, Until: e.Until, Reason: e.Reason, Offence: e.Offence})
		}
	}
	return evs
}

// applyBan puts b into the local copy unless it touches a trusted
// network or has ended. mu is held.
func (g *Guard) applyBan(r *rules, b Ban) {
	if !g.now().Before(b.Until) || r.overlapsTrusted(b.Prefix) {
		return
	}
	g.putBan(b)
	if b.Prefix.IsSingleIP() && !b.Manual {
		// The fleet judged the address past its exemption (ceiling).
		g.exempt.delete(b.Prefix.Addr())
	}
}

// ApplyBan puts a ban announced by the store into the local copy that
// Accept reads. The feed calls it; it logs nothing (the node that made
// the ban logged it).
func (g *Guard) ApplyBan(b Ban) {
	r := g.rules.Load()
	g.mu.Lock()
	g.applyBan(r, b)
	g.mu.Unlock()
}

// ApplyLift removes a ban the store announced as lifted from the local
// copy.
func (g *Guard) ApplyLift(p netip.Prefix) {
	g.mu.Lock()
	g.removeBan(p)
	g.mu.Unlock()
}

// ReplaceBans makes the local copy exactly bans (a full reload from the
// store), keeping only the bans this node made while the store was down
// and has not handed over yet.
func (g *Guard) ReplaceBans(bans []Ban) {
	r := g.rules.Load()
	g.mu.Lock()
	defer g.mu.Unlock()
	keep := map[netip.Prefix]bool{}
	for _, b := range g.unsynced {
		keep[b.Prefix] = true
	}
	var drop []netip.Prefix
	g.bans.each(func(p netip.Prefix, _ *Ban) bool {
		if !keep[p] {
			drop = append(drop, p)
		}
		return false
	})
	for _, p := range drop {
		g.removeBan(p)
	}
	for _, b := range bans {
		g.applyBan(r, b)
	}
}

// TakeUnsynced returns, and forgets, the bans this node made while the
// store could not be reached; the fleet hands them to the store when it
// returns.
func (g *Guard) TakeUnsynced() []Ban {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := g.unsynced
	g.unsynced = nil
	return out
}

// noteUnsynced keeps a ban made on local state for the store. mu is held.
func (g *Guard) noteUnsynced(evs []Event, now time.Time) {
	if g.shared == nil {
		return
	}
	for _, e := range evs {
		if e.Kind != EventBanned {
			continue
		}
		if b, ok := g.bans.get(e.Prefix); ok {
			g.unsynced = append(g.unsynced, *b)
		} else {
			g.unsynced = append(g.unsynced, Ban{Prefix: e.Prefix, Created: now, Until: e.Until, Reason: e.Reason, Offence: e.Offence})
		}
	}
}

// sharedTimeout bounds an admin call to the store.
const sharedTimeout = 2 * time.Second

// HasShared reports whether a shared store is plugged in.
func (g *Guard) HasShared() bool { return g.shared != nil }

// sharedAddBan hands an admin ban to the store; a store that cannot take
// it now gets it when it returns.
func (g *Guard) sharedAddBan(b Ban) {
	if g.shared == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), sharedTimeout)
	defer cancel()
	if !g.shared.Up() || g.shared.AddBan(ctx, b) != nil {
		g.mu.Lock()
		g.unsynced = append(g.unsynced, b)
		g.mu.Unlock()
		g.log.Warn("guard: ban kept on this node until the shared store answers", "prefix", b.Prefix.String())
	}
}

// sharedRemoveBan lifts p in the store; it reports whether the store
// had it.
func (g *Guard) sharedRemoveBan(p netip.Prefix) bool {
	if g.shared == nil {
		return false
	}
	g.mu.Lock()
	g.unsynced = slices.DeleteFunc(g.unsynced, func(b Ban) bool { return b.Prefix == p })
	g.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), sharedTimeout)
	defer cancel()
	ok, err := g.shared.RemoveBan(ctx, p)
	if err != nil {
		g.log.Warn("guard: ban not lifted in the shared store; lifted on this node only", "prefix", p.String(), "err", err)
	}
	return ok
}

// sharedUnlock unlocks login in the store.
func (g *Guard) sharedUnlock(login string) bool {
	if g.shared == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), sharedTimeout)
	defer cancel()
	ok, err := g.shared.Unlock(ctx, login)
	if err != nil {
		g.log.Warn("guard: login not unlocked in the shared store; unlocked on this node only", loginAttr(login), "err", err)
	}
	return ok
}

// sharedLockouts are the store's lockouts; none when it does not answer.
func (g *Guard) sharedLockouts() []Lockout {
	if g.shared == nil || !g.shared.Up() {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), sharedTimeout)
	defer cancel()
	ls, err := g.shared.Lockouts(ctx)
	if err != nil {
		g.log.Warn("guard: lockouts of the shared store not read; listing this node's", "err", err)
		return nil
	}
	return ls
}

// KeepLimits are how many distinct failures each window keeps (address,
// network, login, pair) under c: a shared store bounds its windows the
// same way as the in-memory guard.
func KeepLimits(c *Config) [4]int {
	k := newKeepLimits(c)
	return [4]int{k.ip, k.net, k.login, k.pair}
}

// KeepUnsynced gives back a ban TakeUnsynced returned that the store
// could not take.
func (g *Guard) KeepUnsynced(b Ban) {
	g.mu.Lock()
	g.unsynced = append(g.unsynced, b)
	g.mu.Unlock()
}
