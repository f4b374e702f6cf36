package fleet

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
)

// A reservation (lease) lives guard.shared.lease in the store and is
// renewed by its node every third of that while the attempt is alive,
// so the lease bounds only how long a node that died (crashed, killed,
// cut off) keeps a login's or an address's budget held, not how long an
// attempt may take: a backend login, a Dovecot report, a tarpit may all
// outlast it.

// fixedKeys is how many keys attemptKeys gives before the networks'.
const fixedKeys = 17

// maxHold ends the renewal of a lease whose attempt never finished (a
// bug): longer than any attempt can live (login deadline, backend login
// timeout, the Dovecot adapter's lease of at most 30 s).
const maxHold = 2 * time.Hour

// hold notes a lease this node holds; ks are the attempt's keys (with
// nets networks), of which the lease sets are renewed.
func (s *Store) hold(lease string, ks []string, nets int, now time.Time) {
	lk := []string{ks[3], ks[4], ks[5]}
	for i := range nets {
		lk = append(lk, ks[fixedKeys+4*i+1])
	}
	s.heldMu.Lock()
	s.held[lease] = &heldLease{keys: lk, since: now, renewed: now}
	s.heldMu.Unlock()
}

// unhold forgets a lease that Finish releases.
func (s *Store) unhold(lease string) {
	if lease == "" {
		return
	}
	s.heldMu.Lock()
	delete(s.held, lease)
	s.heldMu.Unlock()
}

// Held is how many leases this node holds and renews (tests).
func (s *Store) Held() int {
	s.heldMu.Lock()
	defer s.heldMu.Unlock()
	return len(s.held)
}

// renewLeases renews, every third of guard.shared.lease until ctx ends,
// the leases this node holds that are due (renewDue; a login that
// finishes sooner costs no renewal): one pipelined round trip for all of
// them. ZADD XX never brings back a lease Finish released meanwhile.
func (s *Store) renewLeases(ctx context.Context) {
	every := s.cfg.Lease / 3
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := s.now()
		type due struct {
			lease string
			keys  []string
		}
		var list []due
		s.heldMu.Lock()
		for l, h := range s.held {
			switch {
			case now.Sub(h.since) > maxHold:
				delete(s.held, l)
			case renewDue(now.Sub(h.renewed), every):
				list = append(list, due{l, h.keys})
			}
		}
		s.heldMu.Unlock()
		if len(list) == 0 || !s.Up() {
			continue
		}
		exp := float64(ms(now.Add(s.cfg.Lease)))
		cctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
		start := time.Now()
		pipe := s.c.Pipeline()
		for _, d := range list {
			for _, k := range d.keys {
				pipe.ZAddXX(cctx, k, redis.Z{Score: exp, Member: d.lease})
				pipe.PExpire(cctx, k, s.cfg.Lease)
			}
		}
		_, err := pipe.Exec(cctx)
		cancel()
		if s.done("renew", start, err) != nil {
			continue
		}
		s.heldMu.Lock()
		for _, d := range list {
			if h, ok := s.held[d.lease]; ok {
				h.renewed = now
			}
		}
		s.heldMu.Unlock()
	}
}

// renewDue reports whether a lease last renewed (or made) age ago is
// renewed at a tick of the renewal, which ticks every third of the
// lease. Half a tick, not a whole one: a tick that comes a little late
// makes the next one come a little less than a tick after the renewal,
// and a lease skipped there would go two thirds of its length unrenewed
// (review round 2, L4).
func renewDue(age, every time.Duration) bool {
	return age >= every/2
}
