package console

// One producer per live page kind. Every open event stream of a kind
// reads the same snapshot: the producer gathers it once every
// eventEvery while at least one stream listens (the overview's figures
// read the metrics registry; the live sessions list every logged-in
// session and places each address), so N open tabs cost one gather per
// tick, not N. With no stream open nothing is gathered.

import (
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"
)

// feed is one page kind's live data.
type feed[T any] struct {
	every  time.Duration
	gather func() T
	log    *slog.Logger

	mu   sync.Mutex
	n    int           // streams listening
	cur  T             // the latest snapshot
	next chan struct{} // closed when cur is replaced
	stop chan struct{} // closed when the last stream leaves
}

func newFeed[T any](every time.Duration, gather func() T, log *slog.Logger) *feed[T] {
	return &feed[T]{every: every, gather: gather, log: log}
}

// safeGather runs gather and recovers a panic in it (a bug in what it
// reads: the proxy's session list, the geo lookup), which would
// otherwise end the process from the producer's goroutine: it is logged
// and ok is false, and the caller keeps the snapshot it has.
func (f *feed[T]) safeGather() (v T, ok bool) {
	defer func() {
		if p := recover(); p != nil {
			f.log.Error("console: live data gather panicked; previous snapshot kept", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			ok = false
		}
	}()
	return f.gather(), true
}

// join adds a stream and returns the latest snapshot and the channel
// closed when the next one is ready. The first stream gathers at once
// and starts the producer; later ones get the current snapshot, at most
// one tick old.
func (f *feed[T]) join() (T, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	if f.n == 1 {
		if v, ok := f.safeGather(); ok {
			f.cur = v
		}
		f.next = make(chan struct{})
		f.stop = make(chan struct{})
		go f.run(f.stop)
	}
	return f.cur, f.next
}

// leave removes a stream; the last one stops the producer.
func (f *feed[T]) leave() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n--
	if f.n == 0 {
		close(f.stop)
	}
}

// latest is the current snapshot and the channel of the next one.
func (f *feed[T]) latest() (T, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cur, f.next
}

func (f *feed[T]) run(stop chan struct{}) {
	t := time.NewTicker(f.every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		v, ok := f.safeGather() // outside the lock: joining streams do not wait
		if !ok {
			continue // the streams wait for the next tick's snapshot
		}
		f.mu.Lock()
		select {
		case <-stop: // the streams left while it gathered
			f.mu.Unlock()
			return
		default:
		}
		f.cur = v
		close(f.next)
		f.next = make(chan struct{})
		f.mu.Unlock()
	}
}
