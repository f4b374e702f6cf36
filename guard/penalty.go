package guard

import (
	"net/netip"
	"sync/atomic"
	"time"
)

// The failure floor (issue #14, finding 8). Dovecot delays a failed
// login by a penalty of its own, keyed by the address mailgate forwards
// (auth-penalty.h: 2 s, doubling per recent failure, at most 15 s, on
// top of its auth_failure_delay; IPv6 addresses are keyed by their /48
// and a penalty is forgotten about 29 s after the last failure). A wrong
// password from a source that failed just before therefore took longer
// than mailgate's own uniform delay, while a denied-country failure from
// the same source did not: the second try already told the two apart.
// FailureDelay gives each source a floor that follows the same schedule
// from its recent failures of every kind, counted at least as often and
// remembered longer, so both paths end at the same time.

// penaltyIPv6Bits: Dovecot counts an IPv6 source by its /48.
const penaltyIPv6Bits = 48

// PenaltyConfig is `guard.failure_penalty`: the backend's own delay for
// a source with recent failures, which every failure reply from that
// source is padded to. The defaults are Dovecot's AUTH_PENALTY_INIT_SECS
// and AUTH_PENALTY_MAX_SECS (compile-time constants there).
type PenaltyConfig struct {
	// Init is the penalty after one recent failure; it doubles per
	// further failure. 0: off (no per-source floor).
	Init time.Duration `yaml:"init"`
	// Max caps the penalty.
	Max time.Duration `yaml:"max"`
}

// memory is how long after a source's last failure its count is kept:
// four times Max, at least a minute. Dovecot forgets a penalty about
// 29 s (init + 4 s + 8 s + max) after the last failure, so the floor
// outlasts it.
func (p *PenaltyConfig) memory() time.Duration {
	return max(time.Minute, 4*p.Max)
}

// penalty counts a source's recent failures for the failure floor.
type penalty struct {
	N    int
	Last time.Time
}

// penaltyKey is the unit Dovecot keys its penalty by.
func penaltyKey(a netip.Addr) netip.Prefix {
	if a.Is4() {
		return netip.PrefixFrom(a, 32)
	}
	p, _ := a.Prefix(penaltyIPv6Bits)
	return p
}

// delay is the backend's penalty for a source with n recent failures:
// none for the first try, then Init doubled n times, at most Max
// (Dovecot: 4 s, 8 s, 15 s, ...).
func (p *PenaltyConfig) delay(n int) time.Duration {
	if n <= 0 || p.Init <= 0 {
		return 0
	}
	if n > 30 {
		return p.Max
	}
	return min(p.Init<<n, p.Max)
}

// addPenalty counts one failure (of any kind) from addr. mu is held.
func (g *Guard) addPenalty(r *rules, addr netip.Addr, now time.Time) {
	if r.cfg.FailurePenalty.Init <= 0 {
		return
	}
	p := g.pen.update(penaltyKey(addr))
	if now.Sub(p.Last) >= r.cfg.FailurePenalty.memory() {
		p.N = 0
	}
	p.N = min(p.N+1, 100)
	p.Last = now
}

// FailureDelay is how long a failed attempt from addr that starts now
// must take at the least: base (limits.auth_failure_delay, which covers
// the backend's own failure delay) plus the penalty the backend adds for
// the source's recent failures. The proxy reads it at the start of each
// attempt and pads every failure reply to it, so a wrong password and a
// refusal from the same source end at the same time.
func (g *Guard) FailureDelay(addr netip.Addr, base time.Duration) time.Duration {
	addr = normAddr(addr)
	if !addr.IsValid() {
		return base
	}
	pc := &g.rules.Load().cfg.FailurePenalty
	if pc.Init <= 0 {
		return base
	}
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	p, ok := g.pen.get(penaltyKey(addr))
	if !ok || now.Sub(p.Last) >= pc.memory() {
		return base
	}
	return base + pc.delay(p.N)
}

// backendErrSeq makes each backend-error attempt a distinct failure.
var backendErrSeq atomic.Uint64

// backendError (Finish(BackendError)) counts an attempt that passed the
// decision and then ended in a backend error or timeout (no verdict on
// the password) against its source: the address and network windows,
// like denied, but not the
// login's lockout. Each one counts as a distinct failure, so an attacker
// cannot repeat such attempts for free. Trusted sources and sources with
// a recent successful login (exempt) are not counted: an outage must not
// ban the users it hits.
func (g *Guard) backendError(login string, addr netip.Addr) []Event {
	now := g.now()
	addr = normAddr(addr)
	login = normLogin(login)
	r := g.rules.Load()
	if !addr.IsValid() || r.isTrusted(addr) {
		return nil
	}
	var nonce [8]byte
	n := backendErrSeq.Add(1)
	for i := range nonce {
		nonce[i] = byte(n >> (8 * i))
	}
	h := g.hash(login, "\x00backend-error\x00"+string(nonce[:]))
	g.mu.Lock()
	defer g.mu.Unlock()
	if until, ok := g.exempt.get(addr); ok && now.Before(*until) {
		return nil
	}
	return g.countSource(r, addr, h, now)
}
