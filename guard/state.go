package guard

// Persistence
//
// What survives a restart is what an attacker would otherwise win by
// making mailgate restart, or what an admin decided: bans (with the
// escalation history that makes a returning attacker's next ban longer),
// lockouts, success exemptions and where each login last succeeded (so
// a lockout still spares its owner after a restart). Failure counters do
// not: their hashes are keyed by a per-process random key, by design.
//
// The file is JSON, because admins read it when a ban surprises them and
// it is small (a few hundred bytes per entry). Load checks the whole
// file before it changes anything: a half-applied state would be harder
// to reason about than none. Expiry is judged against the clock at Load,
// so time spent down counts as time served.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// ErrBadState wraps every problem with the content of a state file.
var ErrBadState = errors.New("guard: bad state file")

// stateVersion is the format of the state file; Load refuses others.
const stateVersion = 1

// maxStateFile bounds what Load reads: max_tracked entries in each of a
// few tables at a few hundred bytes each stays far below it.
const maxStateFile = 256 << 20

// state is the JSON state file. Failure counters are not in it: their
// hashes are keyed per process and mean nothing after a restart.
type state struct {
	Version  int            `json:"version"`
	Saved    time.Time      `json:"saved"`
	Bans     []Ban          `json:"bans"`
	Lockouts []Lockout      `json:"lockouts"`
	Offences []offenceEntry `json:"offences"`
	Exempt   []exemptEntry  `json:"exemptions"`
	Known    []knownEntry   `json:"known_networks"`
}

type offenceEntry struct {
	Prefix netip.Prefix `json:"prefix"`
	Count  int          `json:"count"`
	Last   time.Time    `json:"last"`
}

type exemptEntry struct {
	Addr  netip.Addr `json:"addr"`
	Until time.Time  `json:"until"`
}

type knownEntry struct {
	Login  string       `json:"login"`
	Prefix netip.Prefix `json:"prefix"`
	At     time.Time    `json:"at"`
}

// Save writes bans, lockouts, escalation history, exemptions and known
// networks to path atomically (a temporary file in the same directory,
// synced, then renamed), mode 0600. The owner calls it periodically and
// at shutdown.
func (g *Guard) Save(path string) error {
	data, err := json.Marshal(g.snapshot())
	if err != nil {
		return fmt.Errorf("guard: save: %w", err)
	}
	// The temporary file sits next to the target so the rename stays
	// on one file system and is atomic: a crash leaves the old or the
	// new state, never half of one. CreateTemp makes it 0600.
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp*")
	if err != nil {
		return fmt.Errorf("guard: save: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync() // before the rename, or a crash may leave it empty
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		if rerr := os.Remove(tmp); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			g.log.Warn("guard: removing temporary state file", "file", tmp, "err", rerr)
		}
		return fmt.Errorf("guard: save: %w", err)
	}
	return nil
}

// snapshot copies what is persisted, oldest first.
func (g *Guard) snapshot() *state {
	now := g.now()
	s := &state{Version: stateVersion, Saved: now}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.bans.each(func(_ netip.Prefix, b *Ban) bool {
		if now.Before(b.Until) {
			s.Bans = append(s.Bans, *b)
		}
		return false
	})
	g.locks.each(func(_ string, l *Lockout) bool {
		if l.active(now) {
			s.Lockouts = append(s.Lockouts, *l)
		}
		return false
	})
	g.offences.each(func(p netip.Prefix, o *offence) bool {
		s.Offences = append(s.Offences, offenceEntry{p, o.Count, o.Last})
		return false
	})
	g.exempt.each(func(a netip.Addr, until *time.Time) bool {
		if now.Before(*until) {
			s.Exempt = append(s.Exempt, exemptEntry{a, *until})
		}
		return false
	})
	g.known.each(func(login string, nets *[]seen[netip.Prefix]) bool {
		for _, n := range *nets {
			s.Known = append(s.Known, knownEntry{login, n.V, n.At})
		}
		return false
	})
	return s
}

// Load reads a state file written by Save and adds its entries, dropping
// those that have expired and bans of networks now trusted. A missing
// file is no error (first start). On any error nothing is changed.
func (g *Guard) Load(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("guard: load: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxStateFile+1))
	if err != nil {
		return fmt.Errorf("guard: load: %w", err)
	}
	if len(data) > maxStateFile {
		return fmt.Errorf("%w: %s is larger than %d bytes", ErrBadState, path, maxStateFile)
	}
	if err := g.loadState(data); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrBadState, path, err)
	}
	return nil
}

// loadState parses and checks data completely, then merges it.
func (g *Guard) loadState(data []byte) error {
	var s state
	// Unknown fields are refused: a file from a newer or foreign
	// format must not be half-understood.
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("data after the state object")
	}
	if s.Version != stateVersion {
		return fmt.Errorf("version %d, want %d", s.Version, stateVersion)
	}
	// Every key must be in the form the guard itself stores (masked,
	// unmapped, no zone, lower-case login); any other form would never
	// be matched by a lookup and would sit in the tables unseen.
	for i, b := range s.Bans {
		if !b.Prefix.IsValid() || b.Prefix != b.Prefix.Masked() || b.Prefix.Addr().Is4In6() || b.Prefix.Addr().Zone() != "" {
			return fmt.Errorf("bans[%d]: prefix %q is not a masked network", i, b.Prefix)
		}
	}
	for i, l := range s.Lockouts {
		if l.Login == "" || l.Login != normLogin(l.Login) {
			return fmt.Errorf("lockouts[%d]: login %q is not a normalized login", i, l.Login)
		}
		if l.Until.IsZero() && !l.Compromised {
			return fmt.Errorf("lockouts[%d]: a failure lockout needs an end", i)
		}
	}
	for i, o := range s.Offences {
		if !o.Prefix.IsValid() || o.Prefix != o.Prefix.Masked() || o.Count < 1 {
			return fmt.Errorf("offences[%d]: bad entry", i)
		}
	}
	for i, e := range s.Exempt {
		if !e.Addr.IsValid() || e.Addr != normAddr(e.Addr) {
			return fmt.Errorf("exemptions[%d]: bad address", i)
		}
	}
	for i, k := range s.Known {
		if k.Login == "" || k.Login != normLogin(k.Login) || !k.Prefix.IsValid() || k.Prefix != k.Prefix.Masked() {
			return fmt.Errorf("known_networks[%d]: bad entry", i)
		}
	}

	// Merge, dropping what has ended while mailgate was down.
	now := g.now()
	r := g.rules.Load()
	c := &r.cfg
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, b := range s.Bans {
		// A network trusted since the ban was made is never banned.
		if now.Before(b.Until) && !r.overlapsTrusted(b.Prefix) {
			g.putBan(b)
		}
	}
	for _, l := range s.Lockouts {
		if l.active(now) {
			*g.locks.update(l.Login) = l
		}
	}
	for _, o := range s.Offences {
		if now.Sub(o.Last) <= c.Ban.ForgetAfter {
			*g.offences.update(o.Prefix) = offence{Count: o.Count, Last: o.Last}
		}
	}
	for _, e := range s.Exempt {
		if now.Before(e.Until) {
			*g.exempt.update(e.Addr) = e.Until
		}
	}
	for _, k := range s.Known {
		if now.Sub(k.At) < c.Lockout.RememberSuccess {
			nets := g.known.update(k.Login)
			*nets = remember(*nets, k.Prefix, k.At, maxKnownNets)
		}
	}
	return nil
}

func (r *rules) overlapsTrusted(p netip.Prefix) bool {
	for _, t := range r.trusted {
		if t.Overlaps(p) {
			return true
		}
	}
	return false
}

// Bans lists the active bans, soonest to end first.
func (g *Guard) Bans() []Ban {
	now := g.now()
	var out []Ban
	g.mu.Lock()
	g.bans.each(func(_ netip.Prefix, b *Ban) bool {
		if now.Before(b.Until) {
			out = append(out, *b)
		}
		return false
	})
	g.mu.Unlock()
	slices.SortFunc(out, func(a, b Ban) int { return a.Until.Compare(b.Until) })
	return out
}

// AddBan bans prefix (a network or a single address) for d as an admin
// ban, which success exemption does not lift. Banning a network that
// overlaps a trusted one fails with ErrTrusted.
func (g *Guard) AddBan(prefix netip.Prefix, d time.Duration, reason string) (Ban, error) {
	if !prefix.IsValid() || d <= 0 {
		return Ban{}, errors.New("guard: a ban needs a valid prefix and a positive duration")
	}
	if a := prefix.Addr(); a.Is4In6() && prefix.Bits() >= 96 {
		prefix = netip.PrefixFrom(a.Unmap(), prefix.Bits()-96)
	}
	prefix = netip.PrefixFrom(prefix.Addr().WithZone(""), prefix.Bits()).Masked()
	if g.rules.Load().overlapsTrusted(prefix) {
		return Ban{}, fmt.Errorf("%w: %s overlaps guard.trusted_networks", ErrTrusted, prefix)
	}
	now := g.now()
	b := Ban{Prefix: prefix, Created: now, Until: now.Add(d), Reason: reason, Manual: true}
	g.mu.Lock()
	g.putBan(b)
	g.mu.Unlock()
	g.log.Info("guard: ban added", "prefix", prefix.String(), "until", b.Until, "reason", reason)
	g.sharedAddBan(b)
	return b, nil
}

// RemoveBan lifts the ban of exactly prefix and forgets its escalation
// history; it reports whether there was one.
func (g *Guard) RemoveBan(prefix netip.Prefix) bool {
	prefix = prefix.Masked()
	g.mu.Lock()
	ok := g.removeBan(prefix)
	g.offences.delete(prefix)
	if prefix.IsSingleIP() {
		g.ipFail.delete(prefix.Addr())
	} else {
		g.netFail.delete(prefix)
	}
	g.mu.Unlock()
	if g.sharedRemoveBan(prefix) {
		ok = true
	}
	if ok {
		g.log.Info("guard: ban removed", "prefix", prefix.String())
	}
	return ok
}

// Lockouts lists the locked logins, failure lockouts and compromised
// ones, sorted by login: the fleet's when a shared store answers, with
// this node's own (made while the store was down) added. A console
// account's lockout has Console set. The lock is held only to copy the
// active lockouts; merging and sorting happen after, in O(n log n).
func (g *Guard) Lockouts() []Lockout {
	now := g.now()
	out := g.sharedLockouts()
	g.mu.Lock()
	local := make([]Lockout, 0, g.locks.len())
	g.locks.each(func(_ string, l *Lockout) bool {
		if l.active(now) {
			local = append(local, *l)
		}
		return false
	})
	g.mu.Unlock()
	if len(out) == 0 {
		out = local
	} else {
		shared := make(map[string]bool, len(out))
		for _, l := range out {
			shared[l.Login] = true
		}
		for _, l := range local {
			if !shared[l.Login] {
				out = append(out, l)
			}
		}
	}
	slices.SortFunc(out, func(a, b Lockout) int { return strings.Compare(a.Login, b.Login) })
	for i := range out {
		out[i].Console, _ = ConsoleAccount(out[i].Login)
	}
	return out
}

// Unlock lifts login's lockout (either kind) and forgets its recent
// failures (per-address blocks included) and countries; it reports
// whether it was locked.
func (g *Guard) Unlock(login string) bool {
	login = normLogin(login)
	now := g.now()
	g.mu.Lock()
	l, ok := g.locks.get(login)
	ok = ok && l.active(now)
	g.locks.delete(login)
	g.loginFail.delete(login)
	g.countries.delete(login)
	// The per-address blocks too: an admin who unlocks a user means
	// "let her in now". A scan of one table, for a rare admin action.
	g.pairFail.each(func(k pairKey, _ *window) bool { return k.login == login })
	g.mu.Unlock()
	if g.sharedUnlock(login) {
		ok = true
	}
	if ok {
		g.log.Info("guard: login unlocked", loginAttr(login))
	}
	return ok
}

// Maintain sweeps every interval and, when guard.state_file is set,
// saves the state then too, until ctx ends; it saves once more at the
// end (shutdown). Save errors are logged, not fatal: the guard works on
// from memory. The owner runs it in a goroutine after Load.
func (g *Guard) Maintain(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	save := func() {
		if g.static.StateFile == "" {
			return
		}
		if err := g.Save(g.static.StateFile); err != nil {
			g.log.Warn("guard: saving state", "err", err)
		}
	}
	for {
		select {
		case <-ctx.Done():
			save()
			return
		case <-t.C:
			g.Sweep()
			save()
		}
	}
}
