package fleet

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mailgate/mailgate/guard"
)

// Waits for attempts in flight on other nodes are woken by the store,
// not by polling it. An attempt held back only by attempts in flight
// (beginScript's code 2) marks the lease set it waits on; finishScript,
// releasing a lease from a marked set, publishes the released attempt's
// address, login and networks on the wake channel (<prefix>wake). Every
// node subscribes to it and wakes one of its own waiters per key, as it
// does for the end of its own attempts; the waiter asks the store again
// (one round trip per wake-up). A node that is not subscribed (the
// channel lost, the store down) polls instead, with a capped back-off
// (guard/shared.go).

// waitMark is how long a wait mark lasts: longer than a waiter goes
// without asking again (the guard's longest poll while the channel is
// up), so a waiter is never left unmarked.
const waitMark = 30 * time.Second

// wakePing is how long the channel may stay silent before the node asks
// the store whether it is still there; no answer within another
// wakePing and the channel counts as lost.
const wakePing = 5 * time.Second

// WakeFeedUp reports whether this node receives the store's wake-ups;
// the guard polls only while it does not.
// A node whose wake-ups the store refuses (wakeDenied) counts it as down
// too: the other nodes, on the same store user, cannot wake it either.
func (s *Store) WakeFeedUp() bool { return s.wakeUp.Load() && !s.wakeDenied.Load() }

// wakePublished records whether finishScript could publish a wake-up
// that was due. The first refusal is logged (WARN) and switches this
// node's waits to polling; one published again switches them back.
func (s *Store) wakePublished(ok bool) {
	if !ok {
		s.m.wakeDenied.Inc()
	}
	if s.wakeDenied.Swap(!ok) == !ok {
		return
	}
	if ok {
		s.log.Info("fleet: the store publishes wake-ups again; waits are woken, not polled")
	} else {
		s.log.Warn("fleet: the store refused to publish a wake-up (the store user lacks +zmscore or +publish, see docs/fleet.md); waits for attempts on other nodes poll the store")
	}
	if g := s.wakeGuard.Load(); g != nil {
		g.WakeAllShared()
	}
}

// wakeMessage is the wake-up finishScript publishes for q: this node,
// the address, the networks and the login (last: it may hold anything).
func (s *Store) wakeMessage(q *guard.SharedAttempt) string {
	var b strings.Builder
	b.WriteString(s.node)
	b.WriteByte('|')
	b.WriteString(q.Addr.String())
	b.WriteByte('|')
	for i, n := range q.Nets {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(n.String())
	}
	b.WriteByte('|')
	b.WriteString(q.Login)
	return b.String()
}

// parseWake reads a wake-up. Anything malformed is dropped (ok false):
// the channel is the store's, but a waiter must never trust it to be
// well formed.
func parseWake(msg string) (node string, addr netip.Addr, nets []netip.Prefix, login string, ok bool) {
	f := strings.SplitN(msg, "|", 4)
	if len(f) != 4 || f[0] == "" || f[3] == "" || len(f[2]) > 1024 {
		return "", netip.Addr{}, nil, "", false
	}
	addr, err := netip.ParseAddr(f[1])
	if err != nil {
		return "", netip.Addr{}, nil, "", false
	}
	if f[2] != "" {
		for p := range strings.SplitSeq(f[2], ",") {
			n, err := netip.ParsePrefix(p)
			if err != nil || len(nets) == 8 {
				return "", netip.Addr{}, nil, "", false
			}
			nets = append(nets, n)
		}
	}
	return f[0], addr, nets, f[3], true
}

// listenWake subscribes to the wake channel until ctx ends and wakes
// g's waiters on each release announced by another node. On every
// (re)subscription and on every loss it wakes all of them: a release may
// have been missed, and a waiter must switch between waiting for the
// channel and polling.
func (s *Store) listenWake(ctx context.Context, g *guard.Guard) {
	s.wakeGuard.Store(g)
	ps := s.c.Subscribe(ctx, newKeys(s.cfg.KeyPrefix).wake())
	// A read in progress ends with its connection, not with ctx.
	stop := context.AfterFunc(ctx, func() { ps.Close() })
	defer stop()
	defer ps.Close()
	lost := func() {
		if s.wakeUp.Swap(false) {
			g.WakeAllShared()
		}
	}
	defer lost()
	pinged := false
	for ctx.Err() == nil {
		msg, err := ps.ReceiveTimeout(ctx, wakePing)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && !pinged {
				// Silence: ask, and count the channel lost unless the
				// answer comes within another wakePing.
				pinged = true
				if ps.Ping(ctx) == nil {
					continue
				}
			}
			lost()
			pinged = false
			t := time.NewTimer(retryEvery)
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
			continue
		}
		pinged = false
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" && !s.wakeUp.Swap(true) {
				g.WakeAllShared()
			}
		case *redis.Message:
			node, addr, nets, login, ok := parseWake(m.Payload)
			if ok && node != s.node {
				g.WakeShared(addr, login, nets)
			}
		}
	}
}
