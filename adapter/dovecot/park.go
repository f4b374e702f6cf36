package dovecot

import (
	"container/list"
	"net/netip"
	"sync"
	"time"

	"github.com/mailgate/mailgate/guard"
	"github.com/mailgate/mailgate/policy"
)

// Dovecot's allow and report are separate requests that name no attempt.
// An allowed attempt is parked under what both requests carry, the
// login, the remote address, Dovecot's session id and the password hash,
// until its report comes. A session runs one authentication at a time,
// so the key finds the right attempt; a second allow under a parked key
// replaces it (Handler.allow).
//
// A parked attempt holds its guard reservation (so parallel guesses meet
// the thresholds as they do at the proxy) for at most its lease; one
// whose report never comes ends as Abandoned then, which counts against
// no one. The table holds at most max attempts: when full, the oldest is
// ended as Abandoned to make room. Neither bound can lock anyone out: a
// reservation only makes other attempts of the same source or login wait
// while it is held, trusted sources reserve nothing, and an attempt that
// lost its place is still counted by its report (see Handler.report).

// parkKey names one attempt in both of its requests.
type parkKey struct {
	login, session, pwhash string
	remote                 netip.Addr
}

// parked is one attempt between its allow and its report.
type parked struct {
	key     parkKey
	att     *guard.Attempt
	d       policy.Decision
	cid     string    // the id on its log lines
	expires time.Time // end of the lease
	elem    *list.Element
}

// parking is the table of parked attempts. Safe for concurrent use.
type parking struct {
	mu    sync.Mutex
	byKey map[parkKey]*parked
	order *list.List // of *parked, oldest first
	max   int
}

func newParking(max int) *parking {
	return &parking{byKey: map[parkKey]*parked{}, order: list.New(), max: max}
}

// park adds p and returns the attempts it displaced: replaced, one
// already parked under the same key (a retry Dovecot never reported),
// and evicted, the oldest when the table is full. The caller ends them
// as Abandoned.
func (t *parking) park(p *parked) (replaced *parked, evicted []*parked) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if old, ok := t.byKey[p.key]; ok {
		t.remove(old)
		replaced = old
	}
	for t.order.Len() >= t.max {
		old := t.order.Front().Value.(*parked)
		t.remove(old)
		evicted = append(evicted, old)
	}
	p.elem = t.order.PushBack(p)
	t.byKey[p.key] = p
	return replaced, evicted
}

// take removes and returns the attempt parked under k, or nil.
func (t *parking) take(k parkKey) *parked {
	t.mu.Lock()
	defer t.mu.Unlock()
	p, ok := t.byKey[k]
	if ok {
		t.remove(p)
	}
	return p
}

// expire removes and returns the attempts whose lease ended by now.
func (t *parking) expire(now time.Time) (out []*parked) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for e := t.order.Front(); e != nil; {
		next := e.Next()
		if p := e.Value.(*parked); !now.Before(p.expires) {
			t.remove(p)
			out = append(out, p)
		}
		e = next
	}
	return out
}

// len is the number of parked attempts.
func (t *parking) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.order.Len()
}

// remove drops p. mu is held.
func (t *parking) remove(p *parked) {
	t.order.Remove(p.elem)
	delete(t.byKey, p.key)
}
