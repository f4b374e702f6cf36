package guard

import "time"

// table is a map bounded to max keys. Keys are kept in order of last
// update; inserting past max evicts the least recently updated key, so a
// flood of distinct addresses costs bounded memory and evicts only keys
// that have been quiet the longest. Not safe for concurrent use; the
// Guard's mutex covers it.
type table[K comparable, V any] struct {
	max        int
	m          map[K]*node[K, V]
	head, tail *node[K, V] // head: most recently updated
	// onEvict, if set, is told about keys evicted for room.
	onEvict func(K, *V)
}

type node[K comparable, V any] struct {
	key        K
	val        V
	prev, next *node[K, V]
}

func newTable[K comparable, V any](max int) *table[K, V] {
	return &table[K, V]{max: max, m: make(map[K]*node[K, V])}
}

// get returns the value for k without changing its age.
func (t *table[K, V]) get(k K) (*V, bool) {
	n, ok := t.m[k]
	if !ok {
		return nil, false
	}
	return &n.val, true
}

// update returns the value for k, creating a zero one if needed, and
// marks k as most recently updated.
func (t *table[K, V]) update(k K) *V {
	if n, ok := t.m[k]; ok {
		t.unlink(n)
		t.pushFront(n)
		return &n.val
	}
	if len(t.m) >= t.max && t.tail != nil {
		old := t.tail
		t.remove(old)
		if t.onEvict != nil {
			t.onEvict(old.key, &old.val)
		}
	}
	n := &node[K, V]{key: k}
	t.m[k] = n
	t.pushFront(n)
	return &n.val
}

func (t *table[K, V]) delete(k K) {
	if n, ok := t.m[k]; ok {
		t.remove(n)
	}
}

func (t *table[K, V]) len() int { return len(t.m) }

// each calls f from the oldest key to the newest; f returning true
// deletes the key.
func (t *table[K, V]) each(f func(k K, v *V) (del bool)) {
	for n := t.tail; n != nil; {
		prev := n.prev
		if f(n.key, &n.val) {
			t.remove(n)
		}
		n = prev
	}
}

func (t *table[K, V]) remove(n *node[K, V]) {
	t.unlink(n)
	delete(t.m, n.key)
}

func (t *table[K, V]) unlink(n *node[K, V]) {
	if n.prev != nil {
		n.prev.next = n.next
	} else {
		t.head = n.next
	}
	if n.next != nil {
		n.next.prev = n.prev
	} else {
		t.tail = n.prev
	}
	n.prev, n.next = nil, nil
}

func (t *table[K, V]) pushFront(n *node[K, V]) {
	n.next = t.head
	if t.head != nil {
		t.head.prev = n
	}
	t.head = n
	if t.tail == nil {
		t.tail = n
	}
}

// window counts distinct failures within a sliding time window. Each
// failure is a 64-bit keyed hash of what was tried (see Guard.hash), so a
// client repeating one wrong password adds nothing; the password itself
// is never kept.
type window struct {
	hits []hit
}

type hit struct {
	at int64  // unix nanoseconds of the latest try of h
	h  uint64 // keyed hash of the credential tried
}

// add records h at now, prunes entries older than span and returns the
// number of distinct failures left. A repeat of h only refreshes its
// time. At most limit entries are kept (the oldest go first); counts
// above limit do not matter because every threshold is at most limit.
func (w *window) add(h uint64, now time.Time, span time.Duration, limit int) int {
	w.prune(now, span)
	t := now.UnixNano()
	for i := range w.hits {
		if w.hits[i].h == h {
			w.hits[i].at = t
			return len(w.hits)
		}
	}
	if len(w.hits) >= limit {
		w.hits = append(w.hits[:0], w.hits[1:]...)
	}
	w.hits = append(w.hits, hit{at: t, h: h})
	return len(w.hits)
}

// count prunes and returns the distinct failures within span of now.
func (w *window) count(now time.Time, span time.Duration) int {
	w.prune(now, span)
	return len(w.hits)
}

// prune drops entries older than span. Entries are kept in time order
// except for refreshed repeats, so it scans them all; there are few.
func (w *window) prune(now time.Time, span time.Duration) {
	cut := now.Add(-span).UnixNano()
	kept := w.hits[:0]
	for _, e := range w.hits {
		if e.at > cut {
			kept = append(kept, e)
		}
	}
	clear(w.hits[len(kept):])
	w.hits = kept
	if len(w.hits) == 0 {
		w.hits = nil
	}
}
