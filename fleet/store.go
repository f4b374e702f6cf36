// Package fleet shares the brute-force guard of several mailgate nodes
// through Redis or Valkey (docs/fleet.md): failure windows, attempt
// reservations (leases), bans with escalation, lockouts, exemptions, the
// networks and countries of successful logins. It implements
// guard.Shared; the guard asks it once when an attempt begins and once
// when it ends, each time one server-side script (EVALSHA), atomic
// across nodes, with keys that expire by themselves.
//
// Accept never waits on the store: Run keeps the guard's local ban table
// a copy of the store's, fed by a change feed (a stream read from the
// last entry seen, with a full reload from the ban index when the feed
// was trimmed past it, at start and after every loss of the store).
//
// The store unreachable, the node goes on with its own in-memory guard
// and its last copy of the bans (or refuses logins with fail_closed); it
// logs once when it loses the store and once when it is back, and then
// hands over the bans it made meanwhile and reloads the list.
//
// Redis Cluster is not supported: a script touches the keys of an
// address, its networks and a login at once, which Cluster allows only
// within one hash slot, and one slot for everything would be one server
// anyway. Use one server with replicas and Sentinel.
package fleet

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/mailgate/mailgate/guard"
)

// Store is the shared state of a fleet. Safe for concurrent use.
type Store struct {
	cfg    guard.SharedConfig
	c      redis.UniversalClient
	log    *slog.Logger
	now    func() time.Time
	hashK  []byte
	node   string // random, names this node's leases
	leases atomic.Uint64
	up     atomic.Bool
	// wasUp remembers the last state logged, so loss and return are
	// logged once each; mu covers it.
	mu      sync.Mutex
	logged  bool // a state was logged
	wasUp   bool
	m       *metrics
	kick    chan struct{} // wakes Run after the login path lost the store
	reloads atomic.Uint64
	// held are the leases of this node's attempts in flight, which Run
	// renews until Finish; heldMu covers it.
	heldMu sync.Mutex
	held   map[string]*heldLease
	wakeUp atomic.Bool // subscribed to the wake channel (wake.go)
	// wakeDenied: the store refused a wake-up this node had to publish
	// (the user lacks +zmscore or +publish); the wake channel counts as
	// down for this node's waits until one is published (wake.go).
	wakeDenied atomic.Bool
	wakeGuard  atomic.Pointer[guard.Guard]
}

// heldLease is one reservation of this node: the lease sets that hold
// it, and when it was made and last renewed.
type heldLease struct {
	keys           []string
	since, renewed time.Time
}

// Options are the Store's collaborators.
type Options struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Now is the clock; nil: time.Now.
	Now func() time.Time
}

// New makes the store's client from cfg (validated by guard.Config) and
// reads its secrets. It does not contact the store: Run and the first
// call do.
func New(cfg guard.SharedConfig, o Options) (*Store, error) {
	if !cfg.Enabled() {
		return nil, errors.New("fleet: guard.shared.addresses is empty")
	}
	s := &Store{cfg: cfg, log: o.Logger, now: o.Now, kick: make(chan struct{}, 1), held: map[string]*heldLease{}}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	key, err := readSecret(cfg.HashKeyFile, "guard.shared.hash_key_file", 16)
	if err != nil {
		return nil, err
	}
	s.hashK = key
	var pw, spw string
	if cfg.PasswordFile != "" {
		b, err := readSecret(cfg.PasswordFile, "guard.shared.password_file", 1)
		if err != nil {
			return nil, err
		}
		pw = string(b)
	}
	if cfg.SentinelPasswordFile != "" {
		b, err := readSecret(cfg.SentinelPasswordFile, "guard.shared.sentinel_password_file", 1)
		if err != nil {
			return nil, err
		}
		spw = string(b)
	}
	var tc *tls.Config
	if cfg.TLS {
		tc = &tls.Config{MinVersion: tls.VersionTLS12}
		if cfg.CAFile != "" {
			pem, err := os.ReadFile(cfg.CAFile)
			if err != nil {
				return nil, fmt.Errorf("guard.shared.ca_file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("guard.shared.ca_file: %s holds no PEM certificate", cfg.CAFile)
			}
			tc.RootCAs = pool
		}
	}
	s.node = randomID()
	t := cfg.Timeout
	if cfg.SentinelMaster != "" {
		s.c = redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName: cfg.SentinelMaster, SentinelAddrs: cfg.Addresses,
			SentinelPassword: spw, Username: cfg.Username, Password: pw, DB: cfg.DB,
			TLSConfig: tc, DialTimeout: t, ReadTimeout: t, WriteTimeout: t, MaxRetries: -1,
			PoolTimeout: t, PoolSize: poolSize, DisableIdentity: true, Protocol: 2,
		})
	} else {
		s.c = redis.NewClient(&redis.Options{
			Addr: cfg.Addresses[0], Username: cfg.Username, Password: pw, DB: cfg.DB,
			TLSConfig: tc, DialTimeout: t, ReadTimeout: t, WriteTimeout: t, MaxRetries: -1,
			PoolTimeout: t, PoolSize: poolSize, DisableIdentity: true, Protocol: 2,
		})
	}
	s.m = newMetrics(s, o.Registerer)
	return s, nil
}

// poolSize bounds the connections a node keeps to the store: one per
// login attempt talking to it at once (two calls of well under a
// millisecond each), so a burst of logins never waits for a connection
// long enough to count as the store lost.
const poolSize = 128

// liftMark is how long a lift is remembered against bans handed back by
// nodes that missed it: longer than any node stays away unnoticed.
const liftMark = 7 * 24 * time.Hour

// randomID names this node's leases.
func randomID() string {
	var b [8]byte
	rand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

// readSecret reads a secret file, trimmed of surrounding white space.
func readSecret(path, key string, minLen int) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	b = []byte(strings.TrimSpace(string(b)))
	if len(b) < minLen {
		return nil, fmt.Errorf("%s: secret has %d bytes, want at least %d", key, len(b), minLen)
	}
	return b, nil
}

// HashKey is the fleet secret that keys the failure hashes
// (guard.Options.HashKey).
func (s *Store) HashKey() []byte { return s.hashK }

// Close closes the client.
func (s *Store) Close() error { return s.c.Close() }

// Up reports whether the store answered the last call.
func (s *Store) Up() bool { return s.up.Load() }

// FailClosed is guard.shared.fail_closed.
func (s *Store) FailClosed() bool { return s.cfg.FailClosed }

// Ping asks the store once; check-config prints its answer.
func (s *Store) Ping(ctx context.Context) error {
	return s.c.Ping(ctx).Err()
}

// done records the end of one call to the store: its latency, an error,
// and a change of reachability (logged once each way). A reply that is
// an error from the server (a script error) means the store is up.
func (s *Store) done(op string, start time.Time, err error) error {
	s.m.seconds.WithLabelValues(op).Observe(time.Since(start).Seconds())
	s.m.ops.WithLabelValues(op).Inc()
	if err == nil || errors.Is(err, redis.Nil) {
		return err
	}
	s.m.errors.WithLabelValues(op).Inc()
	if errors.Is(err, context.Canceled) {
		return err // the caller gave up; says nothing about the store
	}
	var rerr redis.Error
	if errors.As(err, &rerr) && !isConnError(rerr) {
		s.log.Error("fleet: store refused a call", "op", op, "err", err)
		return err
	}
	s.setUp(false, err)
	return err
}

// isConnError tells the server's refusals that mean it cannot serve us
// now (loading, a replica after a failover, shutting down) from bugs.
func isConnError(err redis.Error) bool {
	msg := err.Error()
	for _, p := range []string{"LOADING", "READONLY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "NOAUTH", "WRONGPASS", "NOPERM", "OOM"} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

// setUp records reachability; a change is logged once and, on a loss,
// Run is woken to resynchronize when the store is back.
func (s *Store) setUp(up bool, err error) {
	s.up.Store(up)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.logged && s.wasUp == up {
		return
	}
	first := !s.logged
	s.logged, s.wasUp = true, up
	switch {
	case up:
		s.log.Info("fleet: shared store reachable", "addresses", strings.Join(s.cfg.Addresses, ","))
	case first:
		s.log.Error("fleet: shared store unreachable; deciding on this node's state", "err", err, "fail_closed", s.cfg.FailClosed)
	default:
		s.log.Error("fleet: shared store lost; deciding on this node's state until it returns", "err", err, "fail_closed", s.cfg.FailClosed)
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
}

func ms(t time.Time) int64 { return t.UnixMilli() }

func dms(d time.Duration) int64 { return d.Milliseconds() }

// attemptKeys are the KEYS of beginScript and finishScript.
func (s *Store) attemptKeys(q *guard.SharedAttempt) []string {
	k := newKeys(s.cfg.KeyPrefix)
	a := q.Addr.String()
	ipP := netip.PrefixFrom(q.Addr, q.Addr.BitLen()).String()
	out := make([]string, 0, fixedKeys+4*len(q.Nets))
	out = append(out,
		k.p+"fi:"+a, k.pair(q.Login, a), k.p+"fl:"+q.Login,
		k.p+"li:"+a, k.p+"lp:"+k.pairTail(q.Login, a), k.p+"ll:"+q.Login,
		k.p+"e:"+a, k.lock(q.Login), k.p+"n:"+q.Login,
		k.ban(ipP), k.p+"o:"+ipP, k.p+"c:"+q.Login,
		k.bans(), k.locks(), k.feed(), k.pairIndex(q.Login), k.waits())
	for _, n := range q.Nets {
		p := n.String()
		out = append(out, k.p+"fn:"+p, k.p+"ln:"+p, k.ban(p), k.p+"o:"+p)
	}
	return out
}

// Begin implements guard.Shared.
func (s *Store) Begin(ctx context.Context, q *guard.SharedAttempt) (guard.SharedVerdict, error) {
	c := q.Config
	now := s.now()
	lease := s.node + "." + strconv.FormatUint(s.leases.Add(1), 36)
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	start := time.Now()
	ks := s.attemptKeys(q)
	res, err := beginScript.Run(ctx, s.c, ks,
		ms(now), lease, ms(now.Add(s.cfg.Lease)), q.Home.String(), dms(c.Window),
		dms(c.Lockout.Window), c.Lockout.PerIPAfter, c.Lockout.After, c.Ban.IPAfter,
		c.Exemption.MaxFailures, c.Ban.NetworkAfter, dms(c.Lockout.RememberSuccess),
		len(q.Nets), dms(s.cfg.Lease), dms(waitMark)).Slice()
	if err = s.done("begin", start, err); err != nil {
		return guard.SharedVerdict{}, err
	}
	if len(res) != 4 {
		return guard.SharedVerdict{}, fmt.Errorf("fleet: begin script answered %d values", len(res))
	}
	code, _ := res[0].(int64)
	reason, _ := res[1].(string)
	v := guard.SharedVerdict{Reason: reason}
	v.IPFails = toInt(res[2])
	v.PairFails = toInt(res[3])
	switch code {
	case 0:
		v.Allow = true
		q.Lease = lease
		s.hold(lease, ks, len(q.Nets), now)
	case 2:
		v.Wait = true
	case 3:
		v.Locked = true
	case 4:
		b, ok := parseBan(netip.Prefix{}, reason)
		if ok {
			v.Reason = "banned until " + b.Until.UTC().Format(time.RFC3339) + ": " + b.Reason
		} else {
			v.Reason = "banned"
		}
	}
	return v, nil
}

func toInt(v any) int {
	n, _ := v.(int64)
	return int(n)
}

var outcomeCode = map[guard.Outcome]string{
	guard.Abandoned: "a", guard.Passed: "p", guard.WrongPassword: "w",
	guard.Refused: "r", guard.BackendError: "e",
}

// Finish implements guard.Shared.
func (s *Store) Finish(ctx context.Context, q *guard.SharedAttempt, o guard.Outcome, country string) ([]guard.Event, error) {
	c := q.Config
	if o == guard.Abandoned && q.Lease == "" {
		return nil, nil
	}
	s.unhold(q.Lease)
	now := s.now()
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	keep := guard.KeepLimits(c)
	k := newKeys(s.cfg.KeyPrefix)
	deny := 0
	if c.Compromise.Deny {
		deny = 1
	}
	args := []any{
		ms(now), q.Lease, outcomeCode[o], strconv.FormatUint(q.Hash, 16), q.Home.String(), country,
		q.Login, len(q.Nets), dms(c.Window), dms(c.Lockout.Window), c.Lockout.After,
		dms(c.Lockout.Duration), c.Ban.IPAfter, c.Ban.NetworkAfter, dms(c.Ban.Duration),
		strconv.FormatFloat(c.Ban.Factor, 'g', -1, 64), dms(c.Ban.Max), dms(c.Ban.ForgetAfter),
		dms(c.Exemption.Duration), c.Exemption.MaxFailures, dms(c.Lockout.RememberSuccess),
		c.Compromise.Countries, dms(c.Compromise.Window), deny,
		keep[0], keep[1], keep[2], keep[3], s.cfg.FeedLength,
		c.Window.String(), c.Lockout.Window.String(), c.Compromise.Window.String(),
		netip.PrefixFrom(q.Addr, q.Addr.BitLen()).String(),
		k.wake(), s.wakeMessage(q),
	}
	for _, n := range q.Nets {
		args = append(args, n.String())
	}
	start := time.Now()
	res, err := finishScript.Run(ctx, s.c, s.attemptKeys(q), args...).Slice()
	if err = s.done("finish", start, err); err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	var evs []guard.Event
	for _, r := range res {
		if w, ok := r.(string); ok {
			s.wakePublished(w == "P")
			continue
		}
		f, ok := r.([]any)
		if !ok || len(f) != 9 {
			continue
		}
		kind, _ := f[0].(string)
		who, _ := f[1].(string)
		until, dur := toInt64(f[2]), toInt64(f[3])
		e := guard.Event{Failures: toInt(f[4]), Offence: toInt(f[5]), Duration: time.Duration(dur) * time.Millisecond}
		e.Reason, _ = f[6].(string)
		if until > 0 {
			e.Until = time.UnixMilli(until)
		}
		switch kind {
		case "B":
			p, err := netip.ParsePrefix(who)
			if err != nil {
				continue
			}
			e.Kind, e.Prefix = guard.EventBanned, p
		case "L":
			e.Kind, e.Login = guard.EventLocked, who
		case "C":
			e.Kind, e.Login = guard.EventCompromised, who
			e.Refuse = toInt(f[7]) == 1
			if cc, _ := f[8].(string); cc != "" {
				e.Countries = strings.Split(cc, ",")
			}
			if e.Refuse {
				e.Reason += "; denied until an admin unlocks it"
			}
		default:
			continue
		}
		evs = append(evs, e)
	}
	return evs, nil
}

func toInt64(v any) int64 {
	n, _ := v.(int64)
	return n
}

// banValue is a ban as the store keeps it: until|created|manual|offence|reason.
func banValue(b guard.Ban) string {
	m := "0"
	if b.Manual {
		m = "1"
	}
	return strconv.FormatInt(ms(b.Until), 10) + "|" + strconv.FormatInt(ms(b.Created), 10) + "|" + m + "|" +
		strconv.Itoa(b.Offence) + "|" + b.Reason
}

// parseBan reads a stored ban value.
func parseBan(p netip.Prefix, v string) (guard.Ban, bool) {
	f := strings.SplitN(v, "|", 5)
	if len(f) != 5 {
		return guard.Ban{}, false
	}
	until, err1 := strconv.ParseInt(f[0], 10, 64)
	created, err2 := strconv.ParseInt(f[1], 10, 64)
	off, err3 := strconv.Atoi(f[3])
	if err1 != nil || err2 != nil || err3 != nil || (f[2] != "0" && f[2] != "1") {
		return guard.Ban{}, false
	}
	return guard.Ban{Prefix: p, Until: time.UnixMilli(until), Created: time.UnixMilli(created),
		Manual: f[2] == "1", Offence: off, Reason: f[4]}, true
}

// AddBan implements guard.Shared.
func (s *Store) AddBan(ctx context.Context, b guard.Ban) error {
	return s.addBan(ctx, b, false)
}

func (s *Store) addBan(ctx context.Context, b guard.Ban, nx bool) error {
	k := newKeys(s.cfg.KeyPrefix)
	p := b.Prefix.String()
	flag := ""
	if nx {
		flag = "nx"
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	start := time.Now()
	err := addBanScript.Run(ctx, s.c, []string{k.ban(p), k.bans(), k.feed(), k.lifted(p)},
		banValue(b), ms(b.Until), p, ms(s.now()), s.cfg.FeedLength, flag, ms(b.Created)).Err()
	return s.done("ban", start, err)
}

// RemoveBan implements guard.Shared.
func (s *Store) RemoveBan(ctx context.Context, p netip.Prefix) (bool, error) {
	k := newKeys(s.cfg.KeyPrefix)
	ps := p.String()
	fk := k.p + "fn:" + ps
	if p.IsSingleIP() {
		fk = k.p + "fi:" + p.Addr().String()
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	start := time.Now()
	n, err := removeBanScript.Run(ctx, s.c, []string{k.ban(ps), k.p + "o:" + ps, fk, k.bans(), k.feed(), k.lifted(ps)},
		ps, s.cfg.FeedLength, ms(s.now()), dms(liftMark)).Int()
	return n == 1, s.done("lift", start, err)
}

// pairIndexCap is the most entries a login's index of its (login,
// address) windows keeps (the newest; finishScript trims it), and
// unlockBatch the most windows one call of Unlock deletes: a login
// sprayed from many addresses must not make one call that blocks the
// store for every node (review round 2, M2).
const (
	pairIndexCap = 10000
	unlockBatch  = 1000
)

// Unlock implements guard.Shared. One small script lifts the lockout and
// forgets the login's failures and countries; then the (login, address)
// windows, found through the login's index of them (kept by finishScript
// with the windows' own lifetime, never by a scan of the keyspace), are
// deleted in batches of unlockBatch, each its own round trip. The unlock
// succeeds once the lockout is lifted: a batch that fails leaves windows
// that end by themselves, and is logged.
func (s *Store) Unlock(ctx context.Context, login string) (bool, error) {
	k := newKeys(s.cfg.KeyPrefix)
	start := time.Now()
	sctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	n, err := unlockScript.Run(sctx, s.c, []string{k.lock(login), k.p + "fl:" + login, k.p + "c:" + login, k.locks()},
		login, ms(s.now())).Int()
	cancel()
	if err = s.done("unlock", start, err); err != nil {
		return false, err
	}
	if err := s.unlockPairs(ctx, k, login); err != nil {
		s.log.Warn("fleet: unlock lifted the lockout but left (login, address) windows to expire",
			"login", login, "err", err)
	}
	return n == 1, nil
}

// unlockPairs deletes the login's (login, address) windows named by its
// index, and their index entries, unlockBatch at a time. The index is
// read from its start each time (the batch just done is gone from it);
// as many batches as it had entries at the start (one more), so entries
// added meanwhile cannot keep it going. An index larger than
// pairIndexCap (written before the cap) is still emptied.
func (s *Store) unlockPairs(ctx context.Context, k keys, login string) error {
	idx := k.pairIndex(login)
	start := time.Now()
	cctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	total, err := s.c.ZCard(cctx, idx).Result()
	cancel()
	if err = s.done("unlock", start, err); err != nil {
		return err
	}
	for range total/unlockBatch + 1 {
		bctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
		start := time.Now()
		members, err := s.c.ZRange(bctx, idx, 0, unlockBatch-1).Result()
		if err = s.done("unlock", start, err); err != nil || len(members) == 0 {
			cancel()
			return err
		}
		pairs := make([]string, 0, len(members))
		drop := make([]any, len(members))
		for i, m := range members {
			drop[i] = m
			if p, err := netip.ParsePrefix(m); err == nil {
				pairs = append(pairs, k.pair(login, p.Addr().String()))
			}
		}
		start = time.Now()
		_, err = s.c.Pipelined(bctx, func(p redis.Pipeliner) error {
			if len(pairs) > 0 {
				p.Del(bctx, pairs...)
			}
			p.ZRem(bctx, idx, drop...)
			return nil
		})
		cancel()
		if err = s.done("unlock", start, err); err != nil {
			return err
		}
		if len(members) < unlockBatch {
			return nil
		}
	}
	return nil
}

// Lockouts implements guard.Shared.
func (s *Store) Lockouts(ctx context.Context) ([]guard.Lockout, error) {
	k := newKeys(s.cfg.KeyPrefix)
	ctx, cancel := context.WithTimeout(ctx, 4*s.cfg.Timeout)
	defer cancel()
	now := s.now()
	start := time.Now()
	logins, err := s.c.ZRangeByScore(ctx, k.locks(), &redis.ZRangeBy{Min: "(" + strconv.FormatInt(ms(now), 10), Max: "+inf"}).Result()
	if err = s.done("lockouts", start, err); err != nil {
		return nil, err
	}
	var out []guard.Lockout
	for len(logins) > 0 {
		batch := logins[:min(len(logins), 500)]
		logins = logins[len(batch):]
		keys := make([]string, len(batch))
		for i, l := range batch {
			keys[i] = k.lock(l)
		}
		vals, err := s.c.MGet(ctx, keys...).Result()
		if err = s.done("lockouts", start, err); err != nil {
			return nil, err
		}
		for i, v := range vals {
			str, ok := v.(string)
			if !ok {
				continue
			}
			if l, ok := parseLock(batch[i], str); ok && (l.Until.IsZero() || now.Before(l.Until)) {
				out = append(out, l)
			}
		}
	}
	return out, nil
}

// parseLock reads a stored lockout: until|created|compromised|reason.
func parseLock(login, v string) (guard.Lockout, bool) {
	f := strings.SplitN(v, "|", 4)
	if len(f) != 4 {
		return guard.Lockout{}, false
	}
	until, err1 := strconv.ParseInt(f[0], 10, 64)
	created, err2 := strconv.ParseInt(f[1], 10, 64)
	if err1 != nil || err2 != nil {
		return guard.Lockout{}, false
	}
	l := guard.Lockout{Login: login, Created: time.UnixMilli(created), Reason: f[3], Compromised: f[2] == "1"}
	if until > 0 {
		l.Until = time.UnixMilli(until)
	}
	return l, true
}

// keys names the store's keys under one prefix.
type keys struct{ p string }

func newKeys(prefix string) keys { return keys{prefix} }

func (k keys) ban(p string) string      { return k.p + "b:" + p }
func (k keys) lifted(p string) string   { return k.p + "x:" + p }
func (k keys) bans() string             { return k.p + "bans" }
func (k keys) locks() string            { return k.p + "locks" }
func (k keys) lock(login string) string { return k.p + "k:" + login }
func (k keys) feed() string             { return k.p + "feed" }
func (k keys) waits() string            { return k.p + "waits" }

// wake is the pub/sub channel of releases that attempts wait on.
func (k keys) wake() string { return k.p + "wake" }

// pairTail frames the login by its length, so no login can make its
// (login, address) key another's, and Unlock can match the login's keys.
func (k keys) pairTail(login, addr string) string {
	return strconv.Itoa(len(login)) + ":" + login + "|" + addr
}

func (k keys) pair(login, addr string) string { return k.p + "fp:" + k.pairTail(login, addr) }

// pairIndex is the login's index of its (login, address) windows.
func (k keys) pairIndex(login string) string { return k.p + "fx:" + login }

var _ guard.Shared = (*Store)(nil)

// SetLibraryLogger sends the Redis client library's own messages (dial
// failures, pool notes; process-wide, so only cmd calls it) to log at
// debug level instead of unstructured lines on standard error: the loss
// and return of the store are logged once each by the Store itself.
func SetLibraryLogger(log *slog.Logger) { redis.SetLogger(libLogger{log}) }

type libLogger struct{ l *slog.Logger }

func (l libLogger) Printf(ctx context.Context, format string, v ...any) {
	l.l.DebugContext(ctx, "fleet: redis client", "msg_text", fmt.Sprintf(format, v...))
}
