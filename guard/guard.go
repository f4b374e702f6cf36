// Package guard stops password guessing at mailgate, before it costs the
// backend or its user database anything: sliding-window failure counters
// per address, per network, per login and per (login, address); a
// growing tarpit; escalating bans; lockouts that spare the account's
// owner; connection limits; a cap on concurrent backend logins; and a
// signal for logins that succeed from too many countries.
//
// It is pure logic plus a JSON state file; the admin listener serves its
// bans and lockouts over HTTP (cmd/mailgate/internal/admin) through the
// exported methods. It imports only the standard library; the proxy calls
// it and logs the events it returns. Several nodes share one guard
// through Options.Shared (shared.go, package fleet, docs/fleet.md).
//
// # Call points
//
//  1. At accept, after any PROXY header and before TLS: Accept. A refused
//     connection is closed at once and costs no handshake. Conn.LoggedIn
//     after a successful login, Conn.Close when the connection ends.
//  2. For each login attempt, one handle: Guard.Attempt makes it,
//     Attempt.Begin is the one question before the backend is contacted.
//     It reserves the attempt so concurrent attempts cannot overshoot a
//     threshold, and waits (bounded by its context) while attempts in
//     flight hold the source's budget. The proxy waits Verdict.Delay,
//     whatever the verdict, and answers a refusal exactly like a wrong
//     password, padded to FailureDelay. Then BackendSlotFor around the
//     backend login.
//  3. After the attempt: Attempt.Finish with its Outcome (Passed,
//     WrongPassword, Refused, BackendError, Abandoned) records it and
//     releases the reservation in one call, once; the proxy finishes an
//     attempt its connection left unfinished as Abandoned. The returned
//     events are logged with Event.Log; a COMPROMISED event with Refuse
//     set means the session that just logged in is to be dropped.
//
// # Implementation notes
//
// One mutex covers the counters, bans and lockouts; each call does a few
// map operations under it, far below the cost of the TLS handshake that
// precedes every login. Connection counts have their own mutex so accepts
// never wait for login bookkeeping.
//
// Wrong passwords are remembered only as 64-bit keyed hashes (a random
// key made at start, never stored), so a client repeating one stale
// password counts once and nothing that could reveal a password is kept
// in memory past the window or ever written to disk. Every table is
// bounded (max_tracked keys, least recently updated evicted first) and
// Sweep drops what has expired.
package guard

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Sentinel errors; Accept and BackendSlot wrap them.
var (
	// ErrBanned: the source is banned.
	ErrBanned = errors.New("guard: source banned")
	// ErrDenied: the source is in deny_networks or deny_countries.
	ErrDenied = errors.New("guard: source denied")
	// ErrTooManyConns: a connection limit is reached.
	ErrTooManyConns = errors.New("guard: too many connections")
	// ErrBackendBusy: no backend login slot within backend.queue_wait,
	// or the queue is full. Clients get the protocol's temporary error.
	ErrBackendBusy = errors.New("guard: backend login capacity exhausted")
	// ErrTrusted: an admin tried to ban a trusted network.
	ErrTrusted = errors.New("guard: trusted networks are never banned")
)

// RefusedError is why Accept refused a connection; Reason goes to the log.
type RefusedError struct {
	Err    error // ErrBanned, ErrDenied or ErrTooManyConns
	Reason string
}

func (e *RefusedError) Error() string { return e.Err.Error() + ": " + e.Reason }
func (e *RefusedError) Unwrap() error { return e.Err }

// Verdict is Attempt.Begin's answer for one login attempt.
type Verdict struct {
	// Allow: the attempt may go to the backend.
	Allow bool
	// Reason says why not, for the log only; the client sees the same
	// failure reply as for a wrong password.
	Reason string
	// Delay is the tarpit: the proxy waits this long before going on,
	// whether the attempt is allowed or not.
	Delay time.Duration
	// Waited: refused only because a wait for attempts in flight that
	// used the source's budget ran out (Attempt.Begin). Such a refusal
	// is not a failure; Finish(Refused) does not count it.
	Waited bool
	// Locked: refused because the login is locked (lockout or
	// compromise), whoever asks, so it says nothing against the source.
	Locked bool
}

// Options are the Guard's collaborators. Zero values are usable.
type Options struct {
	// Now is the clock; nil: time.Now. Tests pass a fake.
	Now func() time.Time
	// Logger receives admin actions and state problems; nil: discard.
	Logger *slog.Logger
	// Country places an address for deny_countries (ISO code or "");
	// nil: deny_countries cannot match.
	Country func(netip.Addr) string
	// History returns the countries of a login's successful logins since
	// a time, from the login history (audit.Store.LoginCountries), so the
	// compromise signal survives restarts. It is asked at a login's first
	// success in this process (its countries are in memory after that),
	// with a deadline of historyTimeout; nil: memory only.
	History func(ctx context.Context, login string, since time.Time) ([]string, error)
	// Shared is the store a fleet of nodes shares (package fleet,
	// docs/fleet.md); nil: this node's memory only.
	Shared Shared
	// HashKey, when set (at least 16 bytes), keys the failure hashes
	// instead of a random per-process key: a fleet shares it, so one
	// wrong password counts once on every node.
	HashKey []byte
}

// historyTimeout bounds the one history query per login: a slow or
// broken database must not hold a login long.
const historyTimeout = 250 * time.Millisecond

// Limits on what is kept per key.
const (
	// maxLoginKey: logins are counted by their first 320 bytes, the
	// longest address RFC 5321 4.5.3.1 allows (64 local + @ + 255).
	maxLoginKey = 320
	// maxKnownNets: networks remembered per login for lockout exemption
	// (home, office, phone carrier, ...).
	maxKnownNets = 8
	// maxCountries: countries remembered per login for the compromise
	// signal; more than the largest useful compromise.countries.
	maxCountries = 16
)

// Guard is the brute-force guard. Safe for concurrent use.
type Guard struct {
	// static is the configuration as of New; its keys that Reload cannot
	// change (backend, max_tracked, state_file, fingerprint_secret_file)
	// are read from here.
	static  Config
	rules   atomic.Pointer[rules] // the reloadable rest
	now     func() time.Time
	log     *slog.Logger
	country func(netip.Addr) string
	history func(ctx context.Context, login string, since time.Time) ([]string, error)
	// key keys the failure hashes; random per process, never stored.
	key [32]byte
	// fpSecret keys Fingerprint; nil when not configured.
	fpSecret []byte
	// shared is Options.Shared; unsynced are bans made on local state
	// while it was down, for the store when it returns (mu).
	shared   Shared
	unsynced []Ban
	// sharedWait holds, per wake key, the attempts waiting for the
	// store's verdict to change, longest first (mu).
	sharedWait map[wakeKey][]chan struct{}

	// slots are the backend login slots (static.Backend).
	slots backendSlots

	connMu  sync.Mutex
	total   int                     // open connections
	preauth int                     // open connections not logged in
	perIP   map[netip.Addr]*ipConns // untrusted sources only
	// cappedTotal, cappedPre, perNet and perNetPre count the
	// connections of untrusted, unproven sources (Conn.capped).
	cappedTotal, cappedPre int
	perNet                 map[netip.Prefix]int
	perNetPre              map[netip.Prefix]int
	mu                     sync.Mutex // covers everything below
	ipFail                 *table[netip.Addr, window]
	netFail                *table[netip.Prefix, window]
	// loginFail counts wrong passwords per login (lockout.window).
	loginFail *table[string, window]
	// pairFail counts wrong passwords per (login, address).
	pairFail *table[pairKey, window]
	bans     *table[netip.Prefix, Ban]
	// banLens counts the bans by (family, length), so a lookup probes
	// only lengths that are in use.
	banLens  map[banLen]int
	offences *table[netip.Prefix, offence]
	locks    *table[string, Lockout]
	// exempt holds, per address, the end of its success exemption.
	exempt *table[netip.Addr, time.Time]
	// known holds, per login, networks where it logged in successfully.
	known *table[string, []seen[netip.Prefix]]
	// countries holds, per login, countries of recent successes.
	countries *table[string, []seen[string]]
	// flight counts attempts admitted by Begin and not yet released.
	flight flights
	// flightWake holds, per address, network and login that an
	// Attempt.Begin waits on, a channel closed (and removed) when an
	// attempt in flight on that key ends. Keyed per source and login, so
	// an attempt ending wakes only the waits it can change: a wait
	// costs nothing while unrelated logins come and go.
	flightWake map[wakeKey]*waiters
	// pen counts each source's recent failures for FailureDelay.
	pen *table[netip.Prefix, penalty]
}

// rules is the reloadable part of the configuration, compiled. Each
// call loads it once, so a call never mixes two configurations.
type rules struct {
	cfg     Config
	trusted []netip.Prefix
	deny    []netip.Prefix
	denyCC  map[string]bool
	// keep is how many distinct failures each counter keeps per key.
	keep keepLimits
}

func compileRules(c Config) *rules {
	r := &rules{cfg: c, denyCC: map[string]bool{}, keep: newKeepLimits(&c)}
	r.trusted, _ = ParsePrefixes(c.TrustedNetworks, "")
	r.deny, _ = ParsePrefixes(c.DenyNetworks, "")
	for _, cc := range c.DenyCountries {
		r.denyCC[cc] = true
	}
	return r
}

type ipConns struct{ conns, preauth int }

// keepLimits bound the failures a window keeps per key to the highest
// count any action of that counter looks at: counting further changes
// nothing, and memory per key stays at a few hundred bytes even with
// thresholds switched off.
type keepLimits struct{ ip, net, login, pair int }

func newKeepLimits(c *Config) keepLimits {
	// The tarpit stops growing once step << n reaches max.
	tarpit := 0
	if c.Tarpit.After > 0 {
		tarpit = c.Tarpit.After
		for d := c.Tarpit.Step; d < c.Tarpit.Max && tarpit < c.Tarpit.After+31; d *= 2 {
			tarpit++
		}
	}
	return keepLimits{
		ip:    max(1, tarpit, c.Ban.IPAfter, c.Exemption.MaxFailures),
		net:   max(1, c.Ban.NetworkAfter),
		login: max(1, c.Lockout.After),
		pair:  max(1, tarpit, c.Lockout.PerIPAfter),
	}
}

type pairKey struct {
	login string
	addr  netip.Addr
}

type banLen struct {
	is4  bool
	bits int
}

// offence remembers how often a prefix was banned, for escalation.
type offence struct {
	Count int
	Last  time.Time
}

// seen is a value with the time it was last seen.
type seen[T comparable] struct {
	V  T
	At time.Time
}

// Ban is one banned address or network.
type Ban struct {
	Prefix  netip.Prefix `json:"prefix"`
	Created time.Time    `json:"created"`
	Until   time.Time    `json:"until"`
	Reason  string       `json:"reason"`
	// Manual bans come from an admin; success exemption does not lift
	// them.
	Manual bool `json:"manual,omitempty"`
	// Offence is the escalation step (1: first ban).
	Offence int `json:"offence,omitempty"`
}

// Lockout is one locked login.
type Lockout struct {
	Login   string    `json:"login"`
	Created time.Time `json:"created"`
	// Until is the end of the lockout; zero for a compromised login,
	// locked until an admin unlocks it.
	Until  time.Time `json:"until"`
	Reason string    `json:"reason"`
	// Compromised: locked by the compromise signal; unlike a failure
	// lockout it also applies to networks where the login succeeded.
	Compromised bool `json:"compromised,omitempty"`
	// Console is the web console account the lockout is of ("": a mail
	// login); set by Lockouts, never stored (Login is the key).
	Console string `json:"console,omitempty"`
}

func (l *Lockout) active(now time.Time) bool {
	return l.Until.IsZero() || now.Before(l.Until)
}

// New builds a Guard from a validated configuration.
func New(c Config, o Options) (*Guard, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	g := &Guard{
		static:    c,
		now:       o.Now,
		log:       o.Logger,
		country:   o.Country,
		history:   o.History,
		perIP:     map[netip.Addr]*ipConns{},
		perNet:    map[netip.Prefix]int{},
		perNetPre: map[netip.Prefix]int{},
		banLens:   map[banLen]int{},
	}
	if g.now == nil {
		g.now = time.Now
	}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	g.rules.Store(compileRules(c))
	g.shared = o.Shared
	switch {
	case len(o.HashKey) >= 16:
		g.key = hashKeyFrom(o.HashKey)
	case o.HashKey != nil:
		return nil, fmt.Errorf("guard: shared hash key has %d bytes, want at least 16", len(o.HashKey))
	default:
		if _, err := rand.Read(g.key[:]); err != nil {
			return nil, fmt.Errorf("guard: hash key: %w", err)
		}
	}
	if c.FingerprintSecretFile != "" {
		s, err := os.ReadFile(c.FingerprintSecretFile)
		if err != nil {
			return nil, fmt.Errorf("guard.fingerprint_secret_file: %w", err)
		}
		s = []byte(strings.TrimSpace(string(s)))
		// 16 bytes: below that the secret could be brute-forced and the
		// fingerprints would become a password oracle.
		if len(s) < 16 {
			return nil, fmt.Errorf("guard.fingerprint_secret_file: secret has %d bytes, want at least 16", len(s))
		}
		g.fpSecret = s
	}
	g.slots.perSrc = map[netip.Addr]int{}
	n := c.MaxTracked
	g.ipFail = newTable[netip.Addr, window](n)
	g.netFail = newTable[netip.Prefix, window](n)
	g.loginFail = newTable[string, window](n)
	g.pairFail = newTable[pairKey, window](n)
	g.bans = newTable[netip.Prefix, Ban](n)
	g.bans.onEvict = func(p netip.Prefix, _ *Ban) { g.dropBanLen(p) }
	g.offences = newTable[netip.Prefix, offence](n)
	g.locks = newTable[string, Lockout](n)
	g.exempt = newTable[netip.Addr, time.Time](n)
	g.known = newTable[string, []seen[netip.Prefix]](n)
	g.countries = newTable[string, []seen[string]](n)
	g.flight = newFlights()
	g.pen = newTable[netip.Prefix, penalty](n)
	return g, nil
}

// normAddr makes one address one key however it arrived: IPv4-mapped
// IPv6 becomes IPv4, zones are dropped.
func normAddr(a netip.Addr) netip.Addr {
	return a.Unmap().WithZone("")
}

// normLogin makes one login one key: case-folded (mail servers treat
// user names case-insensitively, so an attacker must not get fresh
// counters by changing case) and bounded.
func normLogin(s string) string {
	if len(s) > maxLoginKey {
		s = s[:maxLoginKey]
	}
	return strings.ToLower(s)
}

func (r *rules) isTrusted(a netip.Addr) bool {
	for _, p := range r.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// networks returns the networks a is counted and banned in.
func (r *rules) networks(a netip.Addr) []netip.Prefix {
	if a.Is4() {
		p, _ := a.Prefix(r.cfg.IPv4Prefix)
		return []netip.Prefix{p}
	}
	out := make([]netip.Prefix, 0, len(r.cfg.IPv6Prefixes))
	for _, bits := range r.cfg.IPv6Prefixes {
		p, _ := a.Prefix(bits)
		out = append(out, p)
	}
	return out
}

// homeNet is the narrowest network of a: the unit of per-network
// connection limits and of the networks remembered per login.
func (r *rules) homeNet(a netip.Addr) netip.Prefix {
	bits := r.cfg.IPv4Prefix
	if !a.Is4() {
		bits = slices.Max(r.cfg.IPv6Prefixes)
	}
	p, _ := a.Prefix(bits)
	return p
}

// hash is a keyed hash of (login, password) truncated to 64 bits:
// SHA-256 over a secret 32-byte key followed by the input. The key is
// random per process and the values never leave memory, so the
// length-extension property of a bare prefix MAC does not matter; the
// login is framed by its length so pairs cannot collide by moving bytes
// between login and password. One value serves every counter: the
// per-login ones are keyed by the login anyway, so there it means
// "distinct passwords". Short inputs are hashed from a stack buffer and
// cost no allocation.
func (g *Guard) hash(login, password string) uint64 {
	var buf [512]byte
	n := len(g.key) + 4 + len(login) + len(password)
	var b []byte
	if n <= len(buf) {
		b = buf[:0]
	} else {
		b = make([]byte, 0, n)
	}
	b = append(b, g.key[:]...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(login)))
	b = append(b, login...)
	b = append(b, password...)
	sum := sha256.Sum256(b)
	clear(b) // the password does not linger in this buffer
	return binary.BigEndian.Uint64(sum[:8])
}

// check decides, before backend contact, whether login (normalized)
// from addr (normalized, valid) may be tried, and how long the tarpit
// holds it first; Attempt.Begin asks it. mu is held.
func (g *Guard) check(r *rules, login string, addr netip.Addr, now time.Time) Verdict {
	trusted := r.isTrusted(addr)
	c := &r.cfg
	pk := pairKey{login, addr}
	var nIP, nPair int
	if w, ok := g.ipFail.get(addr); ok {
		nIP = w.count(now, c.Window)
	}
	if w, ok := g.pairFail.get(pk); ok {
		nPair = w.count(now, c.Window)
	}
	v := Verdict{Allow: true, Delay: r.tarpit(max(nIP, nPair))}
	if trusted {
		return v
	}
	if b, ok := g.blockingBan(addr, now); ok {
		v.Allow, v.Reason = false, fmt.Sprintf("%s banned until %s: %s", b.Prefix, b.Until.UTC().Format(time.RFC3339), b.Reason)
		return v
	}
	if l, ok := g.locks.get(login); ok {
		switch {
		case !l.active(now):
			g.locks.delete(login)
		case l.Compromised:
			v.Allow, v.Reason, v.Locked = false, "login locked as compromised: "+l.Reason, true
			return v
		case !g.isKnown(r, login, addr, now):
			v.Allow, v.Reason, v.Locked = false, fmt.Sprintf("login locked until %s: %s", l.Until.UTC().Format(time.RFC3339), l.Reason), true
			return v
		}
	}
	if c.Lockout.PerIPAfter > 0 && nPair >= c.Lockout.PerIPAfter {
		v.Allow, v.Reason = false, fmt.Sprintf("%d distinct wrong passwords for this login from this address", nPair)
	}
	return v
}

// tarpit returns the delay after n recent distinct failures: step after
// tarpit.after failures, doubling per further failure, up to max.
func (r *rules) tarpit(n int) time.Duration {
	t := r.cfg.Tarpit
	if t.After == 0 || n < t.After {
		return 0
	}
	shift := n - t.After
	if shift > 30 {
		return t.Max
	}
	return min(t.Step<<shift, t.Max)
}

// failure records a wrong password (Finish(WrongPassword)) for login from addr and returns the
// bans and lockouts it triggered. The password is only hashed. Calls
// with an invalid address (which Accept and Begin refuse) are ignored.
func (g *Guard) failure(login string, addr netip.Addr, password string) []Event {
	now := g.now()
	addr = normAddr(addr)
	login = normLogin(login)
	if !addr.IsValid() {
		return nil
	}
	r := g.rules.Load()
	trusted := r.isTrusted(addr)
	h := g.hash(login, password)
	c := &r.cfg

	g.mu.Lock()
	defer g.mu.Unlock()
	g.addPenalty(r, addr, now)
	g.pairFail.update(pairKey{login, addr}).add(h, now, c.Window, r.keep.pair)
	if trusted {
		return nil // trusted networks are slowed down, never banned or locked
	}
	var events []Event
	if c.Lockout.After > 0 && !g.isKnown(r, login, addr, now) {
		n := g.loginFail.update(login).add(h, now, c.Lockout.Window, r.keep.login)
		l, locked := g.locks.get(login)
		if n >= c.Lockout.After && (!locked || !l.active(now)) {
			until := now.Add(c.Lockout.Duration)
			*g.locks.update(login) = Lockout{
				Login: login, Created: now, Until: until,
				Reason: fmt.Sprintf("%d distinct wrong passwords in %v", n, c.Lockout.Window),
			}
			g.loginFail.delete(login)
			events = append(events, Event{
				Kind: EventLocked, Login: login, Until: until, Duration: c.Lockout.Duration,
				Failures: n, Reason: fmt.Sprintf("%d distinct wrong passwords in %v from untrusted sources", n, c.Lockout.Window),
			})
		}
	}
	return append(events, g.countSource(r, addr, h, now)...)
}

// denied records an attempt refused (Finish(Refused)) for any reason other than a wrong
// password (policy, ban, lockout). It counts towards bans of the source,
// so a source hammering a denied country rule or a locked account is
// banned, but not towards the login's lockout: a denied source cannot
// lock the owner out.
func (g *Guard) denied(login string, addr netip.Addr, password string) []Event {
	now := g.now()
	addr = normAddr(addr)
	login = normLogin(login)
	r := g.rules.Load()
	if !addr.IsValid() {
		return nil
	}
	if r.isTrusted(addr) {
		g.mu.Lock()
		g.addPenalty(r, addr, now) // the failure floor holds for everyone
		g.mu.Unlock()
		return nil
	}
	h := g.hash(login, password)
	g.mu.Lock()
	defer g.mu.Unlock()
	g.addPenalty(r, addr, now)
	return g.countSource(r, addr, h, now)
}

// countSource adds failure h to the address and network counters and
// bans what crossed its threshold. mu is held.
func (g *Guard) countSource(r *rules, addr netip.Addr, h uint64, now time.Time) []Event {
	c := &r.cfg
	if _, banned := g.blockingBan(addr, now); banned {
		// Attempts still arriving from a banned source (in flight when
		// the ban came, or later ones on its open connection) are
		// refused already; counting them would ban it again at once,
		// one escalation step up, for a single burst.
		return nil
	}
	var events []Event
	exempt := false
	if until, ok := g.exempt.get(addr); ok {
		if now.Before(*until) {
			exempt = true
		} else {
			g.exempt.delete(addr)
		}
	}
	n := g.ipFail.update(addr).add(h, now, c.Window, r.keep.ip)
	ceiling := exempt && c.Exemption.MaxFailures > 0 && n >= c.Exemption.MaxFailures
	if c.Ban.IPAfter > 0 && n >= c.Ban.IPAfter && (!exempt || ceiling) {
		p := netip.PrefixFrom(addr, addr.BitLen())
		reason := fmt.Sprintf("%d distinct failures in %v", n, c.Window)
		if ceiling {
			reason += " (exemption ceiling)"
		}
		if ceiling {
			g.exempt.delete(addr) // or the exemption would lift the ban
		}
		events = append(events, g.ban(r, p, n, reason, now)...)
	}
	if exempt || c.Ban.NetworkAfter == 0 {
		return events
	}
	for _, p := range r.networks(addr) {
		m := g.netFail.update(p).add(h, now, c.Window, r.keep.net)
		if m < c.Ban.NetworkAfter {
			continue
		}
		events = append(events, g.ban(r, p, m, fmt.Sprintf("%d distinct failures from the network in %v", m, c.Window), now)...)
		// A new ban needs fresh failures, or the next failure after it
		// ends would ban again at once at a higher step.
		g.netFail.delete(p)
	}
	return events
}

// ban bans p automatically, escalating on earlier bans, and returns the
// BANNED event; none when an admin ban of p is in force. mu is held.
func (g *Guard) ban(r *rules, p netip.Prefix, failures int, reason string, now time.Time) []Event {
	c := &r.cfg.Ban
	if b, ok := g.bans.get(p); ok && now.Before(b.Until) && b.Manual {
		// An admin ban stays as the admin set it; nothing new to log.
		return nil
	}
	off := g.offences.update(p)
	if off.Count > 0 && now.Sub(off.Last) > c.ForgetAfter {
		off.Count = 0
	}
	d := time.Duration(float64(c.Duration) * math.Pow(c.Factor, float64(off.Count)))
	if d > c.Max || d <= 0 { // d <= 0: float overflow
		d = c.Max
	}
	off.Count++
	off.Last = now
	b := Ban{Prefix: p, Created: now, Until: now.Add(d), Reason: reason, Offence: off.Count}
	g.putBan(b)
	if p.IsSingleIP() {
		// The address starts over; the tarpit keeps its own memory.
		g.ipFail.delete(p.Addr())
	}
	return []Event{{Kind: EventBanned, Prefix: p, Until: b.Until, Duration: d, Failures: failures, Offence: off.Count, Reason: reason}}
}

// putBan stores b, replacing any ban of the same prefix. mu is held.
func (g *Guard) putBan(b Ban) {
	if _, ok := g.bans.get(b.Prefix); !ok {
		g.banLens[banLen{b.Prefix.Addr().Is4(), b.Prefix.Bits()}]++
	}
	*g.bans.update(b.Prefix) = b
}

func (g *Guard) removeBan(p netip.Prefix) bool {
	if _, ok := g.bans.get(p); !ok {
		return false
	}
	g.bans.delete(p)
	g.dropBanLen(p)
	return true
}

func (g *Guard) dropBanLen(p netip.Prefix) {
	k := banLen{p.Addr().Is4(), p.Bits()}
	if g.banLens[k]--; g.banLens[k] <= 0 {
		delete(g.banLens, k)
	}
}

// blockingBan returns a ban that refuses addr now: a manual ban, or an
// automatic one unless addr is exempt. Expired bans met on the way are
// dropped. mu is held.
func (g *Guard) blockingBan(addr netip.Addr, now time.Time) (Ban, bool) {
	exempt := false
	if until, ok := g.exempt.get(addr); ok && now.Before(*until) {
		exempt = true
	}
	var found Ban
	var ok bool
	var expired []netip.Prefix
	for k := range g.banLens {
		if k.is4 != addr.Is4() {
			continue
		}
		p, _ := addr.Prefix(k.bits)
		b, has := g.bans.get(p)
		switch {
		case !has:
		case !now.Before(b.Until):
			expired = append(expired, p)
		case b.Manual || !exempt:
			if !ok || b.Manual {
				found, ok = *b, true
			}
		}
	}
	for _, p := range expired {
		g.removeBan(p)
	}
	return found, ok
}

// isKnown reports whether login succeeded from addr's network within
// lockout.remember_success. mu is held.
func (g *Guard) isKnown(r *rules, login string, addr netip.Addr, now time.Time) bool {
	nets, ok := g.known.get(login)
	if !ok {
		return false
	}
	home := r.homeNet(addr)
	for _, s := range *nets {
		if s.V == home && now.Sub(s.At) < r.cfg.Lockout.RememberSuccess {
			return true
		}
	}
	return false
}

// success records a successful login (Finish(Passed)): addr becomes exempt from
// automatic bans, its network is remembered for login's lockout, the
// (login, addr) failures are forgiven, and the compromise signal is
// checked. country is an ISO code or "" when unknown.
func (g *Guard) success(login string, addr netip.Addr, country string) []Event {
	return g.successSeen(login, addr, country, nil)
}

// successSeen is success with the countries the history knows for login
// from before this process (earlierCountries).
func (g *Guard) successSeen(login string, addr netip.Addr, country string, earlier []string) []Event {
	now := g.now()
	addr = normAddr(addr)
	login = normLogin(login)
	r := g.rules.Load()
	c := &r.cfg
	trusted := r.isTrusted(addr)
	if !addr.IsValid() {
		return nil
	}

	g.mu.Lock()
	defer g.mu.Unlock()
	g.pairFail.delete(pairKey{login, addr})
	if c.Exemption.Duration > 0 && !trusted {
		*g.exempt.update(addr) = now.Add(c.Exemption.Duration)
	}
	if c.Lockout.RememberSuccess > 0 {
		nets := g.known.update(login)
		*nets = remember(*nets, r.homeNet(addr), now, maxKnownNets)
	}
	if c.Compromise.Countries == 0 || !isCountryCode(country) {
		return nil
	}
	seenCC := g.countries.update(login)
	// Countries the history knows from before this process count as
	// seen now: their exact times are not kept, and a country seen
	// within the window must count for the whole of it at least.
	for _, cc := range earlier {
		if isCountryCode(cc) && !slices.ContainsFunc(*seenCC, func(s seen[string]) bool { return s.V == cc }) {
			*seenCC = remember(*seenCC, cc, now, maxCountries)
		}
	}
	fresh := (*seenCC)[:0]
	isNew := true
	for _, s := range *seenCC {
		if now.Sub(s.At) < c.Compromise.Window {
			fresh = append(fresh, s)
			isNew = isNew && s.V != country
		}
	}
	*seenCC = remember(fresh, country, now, maxCountries)
	if !isNew || len(*seenCC) <= c.Compromise.Countries {
		return nil
	}
	ccs := make([]string, len(*seenCC))
	for i, s := range *seenCC {
		ccs[i] = s.V
	}
	e := Event{
		Kind: EventCompromised, Login: login, Countries: ccs,
		Reason: fmt.Sprintf("logins from %d countries within %v", len(ccs), c.Compromise.Window),
	}
	if c.Compromise.Deny && !trusted {
		*g.locks.update(login) = Lockout{Login: login, Created: now, Reason: e.Reason, Compromised: true}
		e.Reason += "; denied until an admin unlocks it"
		e.Refuse = true
	}
	return []Event{e}
}

// remember adds or refreshes v in list, dropping the oldest beyond limit.
func remember[T comparable](list []seen[T], v T, now time.Time, limit int) []seen[T] {
	for i := range list {
		if list[i].V == v {
			list[i].At = now
			return list
		}
	}
	if len(list) >= limit {
		oldest := 0
		for i := range list {
			if list[i].At.Before(list[oldest].At) {
				oldest = i
			}
		}
		list = slices.Delete(list, oldest, oldest+1)
	}
	return append(list, seen[T]{V: v, At: now})
}

// Sweep drops expired counters, bans, lockouts, exemptions and
// memories. The owner calls it every minute or so; lookups also drop the
// expired entries they meet, so Sweep only bounds idle memory.
func (g *Guard) Sweep() {
	now := g.now()
	c := &g.rules.Load().cfg
	g.mu.Lock()
	defer g.mu.Unlock()
	sweepWindows(g.ipFail, now, c.Window)
	sweepWindows(g.netFail, now, c.Window)
	sweepWindows(g.pairFail, now, c.Window)
	sweepWindows(g.loginFail, now, c.Lockout.Window)
	g.pen.each(func(_ netip.Prefix, p *penalty) bool { return now.Sub(p.Last) >= c.FailurePenalty.memory() })
	g.bans.each(func(p netip.Prefix, b *Ban) bool {
		if now.Before(b.Until) {
			return false
		}
		g.dropBanLen(p)
		return true
	})
	g.offences.each(func(_ netip.Prefix, o *offence) bool { return now.Sub(o.Last) > c.Ban.ForgetAfter })
	g.locks.each(func(_ string, l *Lockout) bool { return !l.active(now) })
	g.exempt.each(func(_ netip.Addr, until *time.Time) bool { return !now.Before(*until) })
	g.known.each(func(_ string, nets *[]seen[netip.Prefix]) bool {
		*nets = slices.DeleteFunc(*nets, func(s seen[netip.Prefix]) bool { return now.Sub(s.At) >= c.Lockout.RememberSuccess })
		return len(*nets) == 0
	})
	g.countries.each(func(_ string, ccs *[]seen[string]) bool {
		*ccs = slices.DeleteFunc(*ccs, func(s seen[string]) bool { return now.Sub(s.At) >= c.Compromise.Window })
		return len(*ccs) == 0
	})
}

func sweepWindows[K comparable](t *table[K, window], now time.Time, span time.Duration) {
	t.each(func(_ K, w *window) bool { return w.count(now, span) == 0 })
}

// Reload switches to a new configuration (on SIGHUP) without losing
// counters, bans or lockouts; calls in progress finish on the old one.
// guard.backend, guard.max_tracked, guard.state_file,
// guard.fingerprint_secret_file and guard.shared need a restart: changes to them are
// logged and ignored. On a validation error nothing changes.
func (g *Guard) Reload(c Config) error {
	if err := c.Validate(); err != nil {
		return err
	}
	s := &g.static
	for key, same := range map[string]bool{
		"guard.backend":                 c.Backend == s.Backend,
		"guard.max_tracked":             c.MaxTracked == s.MaxTracked,
		"guard.state_file":              c.StateFile == s.StateFile,
		"guard.fingerprint_secret_file": c.FingerprintSecretFile == s.FingerprintSecretFile,
		"guard.shared":                  reflect.DeepEqual(c.Shared, s.Shared),
	} {
		if !same {
			g.log.Warn("guard: reload: change needs a restart; keeping the old value", "key", key)
		}
	}
	g.rules.Store(compileRules(c))
	return nil
}

// earlierCountries asks the history for login's countries within the
// compromise window when this process has none in memory for it (its
// first success since start, or since eviction). Errors are logged and
// leave the signal to memory.
func (g *Guard) earlierCountries(login string) []string {
	c := &g.rules.Load().cfg
	if g.history == nil || c.Compromise.Countries == 0 {
		return nil
	}
	g.mu.Lock()
	_, known := g.countries.get(login)
	g.mu.Unlock()
	if known {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), historyTimeout)
	defer cancel()
	ccs, err := g.history(ctx, login, g.now().Add(-c.Compromise.Window))
	if err != nil {
		g.log.Warn("login history not read for the compromise signal", "login", login, "err", err)
		return nil
	}
	return ccs
}
