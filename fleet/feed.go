package fleet

import (
	"context"
	"errors"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mailgate/mailgate/guard"
)

// feedPoll is how often a node reads the feed when it had no news: a ban
// reaches every node well within a second of the script that made it.
const feedPoll = 200 * time.Millisecond

// retryEvery is how often a node that lost the store asks again.
const retryEvery = time.Second

// Run keeps g's local ban table a copy of the store's until ctx ends:
// a full load first, then the change feed from the last entry seen. A
// lost store is asked again every second; when it answers, the node
// hands over the bans it made meanwhile and reloads the list. A feed
// trimmed past the last entry seen (the node was too far behind) also
// reloads the list.
//
// It also renews the leases of this node's attempts in flight (lease.go)
// and wakes this node's waits on releases elsewhere (wake.go).
func (s *Store) Run(ctx context.Context, g *guard.Guard) {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { s.renewLeases(ctx) })
	wg.Go(func() { s.listenWake(ctx, g) })
	last := "" // "": resynchronize first
	for ctx.Err() == nil {
		if last == "" {
			id, err := s.resync(ctx, g)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				s.sleep(ctx, retryEvery)
				continue
			}
			last = id
		}
		start := time.Now()
		// A poll, not a blocking read: the client gives a blocking read
		// 10 s past its block before it notices a silent store, and the
		// store's own timeout bounds a poll. The stream's trim state
		// comes in the same round trip.
		feed := newKeys(s.cfg.KeyPrefix).feed()
		pipe := s.c.Pipeline()
		read := pipe.XRead(ctx, &redis.XReadArgs{Streams: []string{feed, last}, Count: 1000, Block: -1})
		info := pipe.XInfoStream(ctx, feed)
		_, err := pipe.Exec(ctx)
		if ctx.Err() != nil {
			return
		}
		res, rerr := read.Result()
		inf, ierr := info.Result()
		if rerr != nil && !errors.Is(rerr, redis.Nil) || ierr != nil && !isNoKey(ierr) {
			if rerr == nil || errors.Is(rerr, redis.Nil) {
				rerr = ierr
			}
			if err == nil {
				err = rerr
			}
			s.done("feed", start, err)
			last = ""
			s.sleep(ctx, retryEvery)
			continue
		}
		if !s.Up() {
			// The login path lost the store while the feed kept it:
			// hand over what was decided alone meanwhile.
			last = ""
			continue
		}
		from := last
		for _, st := range res {
			for _, m := range st.Messages {
				s.apply(g, m.Values)
				last = m.ID
			}
		}
		// Changes after the one read from may have been trimmed away
		// (XTRIM does not record what it removed): the oldest entry
		// left is newer than the last one seen, or the stream is empty
		// but has grown since. In steady state a node reads the newest
		// entry, which MAXLEN never trims, so this means the node was a
		// whole feed_length behind, or someone trimmed the stream.
		if ierr == nil && trimmedPast(inf, from) {
			s.log.Info("fleet: change feed trimmed past the last change seen; reloading the ban list", "last_seen", from)
			last = ""
			continue
		}
		if len(res) == 0 {
			s.sleep(ctx, feedPoll)
		}
	}
}

// trimmedPast reports whether entries after from may be gone.
func trimmedPast(inf *redis.XInfoStream, from string) bool {
	if inf.Length == 0 {
		return idAfter(inf.LastGeneratedID, from)
	}
	return idAfter(inf.FirstEntry.ID, from)
}

func isNoKey(err error) bool {
	return err != nil && err.Error() == "ERR no such key"
}

// idAfter reports whether stream ID a is after b ("ms-seq").
func idAfter(a, b string) bool {
	am, as := splitID(a)
	bm, bs := splitID(b)
	return am > bm || am == bm && as > bs
}

func splitID(id string) (uint64, uint64) {
	msPart, seqPart, _ := cutDash(id)
	m, _ := strconv.ParseUint(msPart, 10, 64)
	q, _ := strconv.ParseUint(seqPart, 10, 64)
	return m, q
}

func cutDash(s string) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == '-' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "0", false
}

func (s *Store) sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	case <-s.kick:
	}
}

// apply puts one feed entry into the local copy.
func (s *Store) apply(g *guard.Guard, v map[string]any) {
	op, _ := v["op"].(string)
	ps, _ := v["p"].(string)
	p, err := netip.ParsePrefix(ps)
	if err != nil {
		return
	}
	switch op {
	case "ban":
		val, _ := v["v"].(string)
		if b, ok := parseBan(p, val); ok {
			g.ApplyBan(b)
			s.m.feed.Inc()
		}
	case "lift":
		g.ApplyLift(p)
		s.m.feed.Inc()
	}
}

// resync hands the bans made on local state to the store, then notes
// the feed's last entry and reloads the whole ban list into g. It
// returns the entry to read the feed from.
func (s *Store) resync(ctx context.Context, g *guard.Guard) (string, error) {
	k := newKeys(s.cfg.KeyPrefix)
	ctx, cancel := context.WithTimeout(ctx, 20*s.cfg.Timeout)
	defer cancel()
	start := time.Now()
	if err := s.done("reload", start, s.c.Ping(ctx).Err()); err != nil {
		return "", err
	}
	// Every ban of this node's copy goes to the store (unless the store
	// has it, or it was lifted after it was made): the bans made alone
	// while the store was down, and those a store lost (restarted
	// without persistence, a failover to a replica that had not caught
	// up). Otherwise the reload below would drop them.
	pending := append(g.TakeUnsynced(), g.Bans()...)
	if err := s.handOver(ctx, pending); err != nil {
		s.giveBack(g, pending)
		return "", err
	}
	// The last entry before the load: changes after it are read from
	// the feed, so none falls between the load and the feed.
	last := "0-0"
	inf, err := s.c.XInfoStream(ctx, k.feed()).Result()
	if isNoKey(err) {
		err = nil
	}
	if err = s.done("reload", start, err); err != nil {
		return "", err
	}
	if inf != nil && inf.LastGeneratedID != "" {
		last = inf.LastGeneratedID
	}
	bans, err := s.LoadBans(ctx)
	if err != nil {
		return "", err
	}
	g.ReplaceBans(bans)
	s.m.reloads.Inc()
	s.reloads.Add(1)
	s.setUp(true, nil)
	return last, nil
}

// LoadBans reads every active ban from the store's index.
func (s *Store) LoadBans(ctx context.Context) ([]guard.Ban, error) {
	k := newKeys(s.cfg.KeyPrefix)
	start := time.Now()
	now := s.now()
	ps, err := s.c.ZRangeByScore(ctx, k.bans(), &redis.ZRangeBy{Min: "(" + strconv.FormatInt(ms(now), 10), Max: "+inf"}).Result()
	if err = s.done("reload", start, err); err != nil {
		return nil, err
	}
	var out []guard.Ban
	for len(ps) > 0 {
		batch := ps[:min(len(ps), 500)]
		ps = ps[len(batch):]
		keys := make([]string, len(batch))
		for i, p := range batch {
			keys[i] = k.ban(p)
		}
		vals, err := s.c.MGet(ctx, keys...).Result()
		if err = s.done("reload", start, err); err != nil {
			return nil, err
		}
		for i, v := range vals {
			str, ok := v.(string)
			p, perr := netip.ParsePrefix(batch[i])
			if !ok || perr != nil {
				continue
			}
			if b, ok := parseBan(p, str); ok {
				out = append(out, b)
			}
		}
	}
	return out, nil
}

// Reloads counts full reloads of the ban list (tests).
func (s *Store) Reloads() uint64 { return s.reloads.Load() }

// giveBack keeps bans the store could not take for the next resync.
func (s *Store) giveBack(g *guard.Guard, bans []guard.Ban) {
	for _, b := range bans {
		g.KeepUnsynced(b)
	}
}

// handOver gives bans to the store in one pipelined round trip (NX: the
// store's own copy and later lifts win).
func (s *Store) handOver(ctx context.Context, bans []guard.Ban) error {
	now := s.now()
	live := bans[:0:0]
	for _, b := range bans {
		if now.Before(b.Until) {
			live = append(live, b)
		}
	}
	if len(live) == 0 {
		return nil
	}
	start := time.Now()
	if err := s.done("reload", start, addBanScript.Load(ctx, s.c).Err()); err != nil {
		return err
	}
	k := newKeys(s.cfg.KeyPrefix)
	pipe := s.c.Pipeline()
	cmds := make([]*redis.Cmd, len(live))
	for i, b := range live {
		p := b.Prefix.String()
		cmds[i] = addBanScript.EvalSha(ctx, pipe, []string{k.ban(p), k.bans(), k.feed(), k.lifted(p)},
			banValue(b), ms(b.Until), p, ms(now), s.cfg.FeedLength, "nx", ms(b.Created))
	}
	_, err := pipe.Exec(ctx)
	var rerr redis.Error
	if err != nil && !errors.As(err, &rerr) {
		return s.done("reload", start, err)
	}
	s.done("reload", start, nil)
	for _, c := range cmds {
		if n, err := c.Int(); err == nil && n == 1 {
			s.m.unsynced.Inc()
		} else if err != nil {
			s.log.Error("fleet: a ban was not handed over", "err", err)
		}
	}
	return nil
}
