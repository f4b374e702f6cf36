package main

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
)

func TestReleaseDue(t *testing.T) {
	const min = 4 << 20
	for _, c := range []struct {
		name                   string
		reclaimable, allocated uint64
		want                   bool
	}{
		{"quiet after a burst", 60 << 20, 1 << 20, true},
		{"little to reclaim", 3 << 20, 0, false},
		{"busy: the memory is being reused", 60 << 20, 900 << 20, false},
		{"allocated as much as is reclaimable", 60 << 20, 60 << 20, false},
		{"exactly the minimum, quiet", min, 0, true},
	} {
		if got := releaseDue(c.reclaimable, c.allocated, min); got != c.want {
			t.Errorf("%s: releaseDue(%d, %d) = %v, want %v", c.name, c.reclaimable, c.allocated, got, c.want)
		}
	}
}

// TestReleaseMetricsExist: a metric the runtime does not know reads as
// KindBad, and the releaser would then never release anything.
func TestReleaseMetricsExist(t *testing.T) {
	known := map[string]bool{}
	for _, d := range metrics.All() {
		known[d.Name] = d.Kind == metrics.KindUint64
	}
	for _, n := range releaseMetrics {
		if !known[n] {
			t.Errorf("%s: not a uint64 metric of this runtime", n)
		}
	}
}

var releaseSink [][]byte

// TestMemReleaserAfterBurst: garbage left by a burst in the interval
// before a look is collected and returned at that look, once; the
// collector is off meanwhile so nothing else frees it first.
func TestMemReleaserAfterBurst(t *testing.T) {
	runtime.GC()
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	for range 16 << 10 { // 16,384 × 2 KiB: 32 MiB of garbage
		releaseSink = append(releaseSink, make([]byte, 2048))
	}
	releaseSink = nil
	m := newMemReleaser() // the burst was before this look's interval
	if r := m.check(); r < 24<<20 {
		t.Fatalf("after a 32 MiB burst, check reclaimed %d bytes", r)
	}
	if r, _ := m.read(); r >= releaseMinFree {
		t.Errorf("after the release, %d bytes still reclaimable", r)
	}
	if r := m.check(); r != 0 {
		t.Errorf("a second look with nothing new released %d bytes", r)
	}
	// A look after an interval that allocated more than there is to
	// reclaim leaves the memory to the runtime.
	for range 16 << 10 {
		releaseSink = append(releaseSink, make([]byte, 2048))
	}
	releaseSink = nil
	m.last = 0
	if r := m.check(); r != 0 {
		t.Errorf("busy interval: released %d bytes", r)
	}
}
