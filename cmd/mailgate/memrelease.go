package main

import (
	"context"
	"log/slog"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Returning idle heap memory to the OS. After a burst of logins the Go
// runtime keeps the memory the handshakes freed for reuse: up to about
// twice the live heap at GOGC=100, and its background scavenger gives
// little of it back while the heap stays under that goal. A proxy then
// holding thousands of idle spliced sessions showed about 4 KiB more
// RSS per session five minutes after the burst than the sessions use
// (docs/BENCHMARKS.md, "Cheaper logins"): the burst's garbage waits for
// the runtime's two-minute collection, and what that frees stays with
// the process. Once the process has gone quiet, memoryReleaser collects
// and hands the memory back.
const (
	releaseEvery   = 30 * time.Second
	releaseMinFree = 4 << 20 // below this, not worth a collection
)

var releaseMetrics = []string{
	"/memory/classes/heap/objects:bytes", // live objects and garbage not yet collected
	"/memory/classes/heap/free:bytes",    // free, not yet returned to the OS
	"/gc/heap/live:bytes",                // live heap at the last collection
	"/gc/heap/allocs:bytes",              // allocated since start, cumulative
}

// releaseDue says whether to collect and return memory: at least
// minFree of the heap is garbage or free (until a collection runs, a
// burst's garbage still counts as objects), and the process allocated
// less than that since the last look, so it would not have been reused
// before the next. Under load the runtime reuses what it holds and
// nothing is forced.
func releaseDue(reclaimable, allocated, minFree uint64) bool {
	return reclaimable >= minFree && allocated < reclaimable
}

// memReleaser is the state between two looks: the metrics it reads
// and the allocation total at the last look.
type memReleaser struct {
	s    []metrics.Sample
	last uint64
}

func newMemReleaser() *memReleaser {
	m := &memReleaser{s: make([]metrics.Sample, len(releaseMetrics))}
	for i, n := range releaseMetrics {
		m.s[i].Name = n
	}
	_, m.last = m.read()
	return m
}

// read returns the heap's reclaimable bytes (garbage and free memory,
// as far as the last collection's live size tells) and the bytes
// allocated since start.
func (m *memReleaser) read() (reclaimable, allocs uint64) {
	metrics.Read(m.s)
	for _, x := range m.s {
		if x.Value.Kind() != metrics.KindUint64 {
			return 0, 0
		}
	}
	held := m.s[0].Value.Uint64() + m.s[1].Value.Uint64()
	if live := m.s[2].Value.Uint64(); held > live {
		reclaimable = held - live
	}
	return reclaimable, m.s[3].Value.Uint64()
}

// check is one look; it returns the bytes it found reclaimable when it
// collected and returned them, else 0.
func (m *memReleaser) check() uint64 {
	r, allocs := m.read()
	if !releaseDue(r, allocs-m.last, releaseMinFree) {
		m.last = allocs
		return 0
	}
	debug.FreeOSMemory()
	_, m.last = m.read() // the collection's own allocations do not count
	return r
}

// memoryReleaser looks every releaseEvery until ctx ends.
func memoryReleaser(ctx context.Context, log *slog.Logger) {
	m := newMemReleaser()
	t := time.NewTicker(releaseEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if r := m.check(); r > 0 {
			log.Debug("collected and returned idle heap memory to the OS", "reclaimable_mib", r>>20)
		}
	}
}
