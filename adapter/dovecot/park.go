package dovecot

import (
	"container/heap"
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
// the thresholds as they do at the proxy) for at most its lease: the
// tarpit Dovecot was told to wait plus adapters.dovecot.lease, the time
// Dovecot needs to check a password and report (it reports at once, before
// its own failure delay). One whose report never comes ends as Abandoned
// then, which counts against no one, and its report, if it comes later,
// is still counted (Handler.report).
//
// The table holds at most max attempts, and whoever sends allows without
// reports could fill it. When it is full, the source (network, see
// sourceOf) with the most parked attempts loses its oldest, the
// newcomer's own source first when it holds as many: an attacker's flood
// displaces its own attempts before anyone else's. Attempts of
// privileged sources (trusted networks and proven ones, guard.Privileged)
// are never displaced by others: when only they are left, a newcomer
// from elsewhere is not parked (answered as judged, its reservation
// freed, its report still counted), and a privileged newcomer displaces
// the oldest. Losing a place never locks anyone out: it only frees a
// reservation early.

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
	// privileged: from a trusted or proven source, never displaced by
	// another source's attempt.
	privileged bool
	src        netip.Prefix // sourceOf(key.remote)
	seq        uint64       // arrival order
	elem       *list.Element
	srcElem    *list.Element // in its source's queue; nil when privileged
}

// sourceOf is the source an attempt counts for when the table is full:
// the /24 of an IPv4 address and the /64 of an IPv6 one, so that one
// attacker's network is one source however many addresses it uses.
func sourceOf(a netip.Addr) netip.Prefix {
	bits := 64
	if a.Is4() {
		bits = 24
	}
	p, _ := a.Prefix(bits)
	return p
}

// srcQueue is one source's unprivileged parked attempts, oldest first.
type srcQueue struct {
	src netip.Prefix
	l   list.List
	idx int // in the heap
}

// srcHeap orders the sources by their parked attempts, most first; ties
// by the oldest attempt, oldest first.
type srcHeap []*srcQueue

func (h srcHeap) Len() int { return len(h) }
func (h srcHeap) Less(i, j int) bool {
	if a, b := h[i].l.Len(), h[j].l.Len(); a != b {
		return a > b
	}
	return h[i].l.Front().Value.(*parked).seq < h[j].l.Front().Value.(*parked).seq
}
func (h srcHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx, h[j].idx = i, j
}
func (h *srcHeap) Push(x any) { q := x.(*srcQueue); q.idx = len(*h); *h = append(*h, q) }
func (h *srcHeap) Pop() any {
	old := *h
	q := old[len(old)-1]
	*h = old[:len(old)-1]
	return q
}

// parking is the table of parked attempts. Safe for concurrent use.
type parking struct {
	mu    sync.Mutex
	byKey map[parkKey]*parked
	order *list.List // of *parked, oldest first
	bySrc map[netip.Prefix]*srcQueue
	heavy srcHeap
	seq   uint64
	max   int
}

func newParking(max int) *parking {
	return &parking{byKey: map[parkKey]*parked{}, order: list.New(), bySrc: map[netip.Prefix]*srcQueue{}, max: max}
}

// park adds p and returns the attempts it displaced: replaced, one
// already parked under the same key (a retry Dovecot never reported),
// and evicted, the one that made room when the table was full. ok is
// false when p itself found no room (the table full of privileged
// attempts, p not privileged). The caller ends them all as Abandoned.
func (t *parking) park(p *parked) (replaced *parked, evicted []*parked, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if old, found := t.byKey[p.key]; found {
		t.remove(old)
		replaced = old
	}
	p.src = sourceOf(p.key.remote)
	for t.order.Len() >= t.max {
		v := t.victim(p)
		if v == nil {
			return replaced, evicted, false
		}
		t.remove(v)
		evicted = append(evicted, v)
	}
	t.seq++
	p.seq = t.seq
	p.elem = t.order.PushBack(p)
	t.byKey[p.key] = p
	if !p.privileged {
		q := t.bySrc[p.src]
		if q == nil {
			q = &srcQueue{src: p.src}
			t.bySrc[p.src] = q
			p.srcElem = q.l.PushBack(p)
			heap.Push(&t.heavy, q)
		} else {
			p.srcElem = q.l.PushBack(p)
			heap.Fix(&t.heavy, q.idx)
		}
	}
	return replaced, evicted, true
}

// victim is the attempt that gives way to p in a full table, or nil when
// none may. mu is held.
func (t *parking) victim(p *parked) *parked {
	if len(t.heavy) > 0 {
		top := t.heavy[0]
		if own := t.bySrc[p.src]; own != nil && !p.privileged && own.l.Len() >= top.l.Len() {
			return own.l.Front().Value.(*parked)
		}
		return top.l.Front().Value.(*parked)
	}
	if p.privileged && t.order.Len() > 0 {
		return t.order.Front().Value.(*parked)
	}
	return nil
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
	if p.srcElem == nil {
		return
	}
	q := t.bySrc[p.src]
	q.l.Remove(p.srcElem)
	p.srcElem = nil
	if q.l.Len() == 0 {
		heap.Remove(&t.heavy, q.idx)
		delete(t.bySrc, p.src)
	} else {
		heap.Fix(&t.heavy, q.idx)
	}
}
