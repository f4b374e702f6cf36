package guard

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"testing"
)

// benchInputs are fixed addresses, logins and passwords, so a benchmark
// measures the guard and not fmt.
type benchInputs struct {
	addrs  []netip.Addr
	logins []string
	pws    []string
}

func newBenchInputs(n int) benchInputs {
	in := benchInputs{}
	for i := range n {
		// One address per /24, so network bans do not kick in.
		in.addrs = append(in.addrs, netip.AddrFrom4([4]byte{10 + byte(i>>16), byte(i >> 8), byte(i), 1}))
		in.logins = append(in.logins, fmt.Sprintf("user%d@example.org", i))
		in.pws = append(in.pws, fmt.Sprintf("Summer%d!", i))
	}
	return in
}

// BenchmarkCheckFailure is one failed login: the check before the
// backend, the failure after, round-robin over 4096 sources, a new password each
// round, so sources go through the tarpit into bans (default config).
func BenchmarkCheckFailure(b *testing.B) {
	g, _ := newTestGuard(b, nil)
	in := newBenchInputs(4096)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		k := i % len(in.addrs)
		g.checkNow(in.logins[k], in.addrs[k])
		g.failure(in.logins[k], in.addrs[k], in.pws[(i/len(in.addrs))%len(in.pws)])
		i++
	}
}

// guardWithFailures returns a guard that has seen one failure from each
// of 4096 sources, and those sources.
func guardWithFailures(b *testing.B) (*Guard, benchInputs) {
	g, _ := newTestGuard(b, nil)
	in := newBenchInputs(4096)
	for i := range in.addrs {
		g.failure(in.logins[i], in.addrs[i], "x")
	}
	return g, in
}

// BenchmarkCheck is the check every login attempt pays.
func BenchmarkCheck(b *testing.B) {
	g, in := guardWithFailures(b)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		k := i % len(in.addrs)
		g.checkNow(in.logins[k], in.addrs[k])
		i++
	}
}

// BenchmarkAccept is the per-connection cost before TLS (with 1000
// bans in place).
func BenchmarkAccept(b *testing.B) {
	g, _ := newTestGuard(b, nil)
	for i := range 1000 {
		if _, err := g.AddBan(netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 16, byte(i >> 8), byte(i)}), 32), 1e12, "b"); err != nil {
			b.Fatal(err)
		}
	}
	in := newBenchInputs(4096)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		c, err := g.Accept(in.addrs[i%len(in.addrs)])
		if err != nil {
			b.Fatal(err)
		}
		c.Close()
		i++
	}
}

// BenchmarkFlood is a flood of failures from 100,000 distinct addresses
// (one each); it reports the heap kept per tracked address.
func BenchmarkFlood(b *testing.B) {
	const n = 100_000
	in := newBenchInputs(n)
	b.ReportAllocs()
	var perAddr float64
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		g, _ := newTestGuard(b, nil)
		for i := range n {
			g.failure(in.logins[i], in.addrs[i], in.pws[i])
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		perAddr = float64(after.HeapAlloc-before.HeapAlloc) / n
		runtime.KeepAlive(g)
	}
	b.ReportMetric(perAddr, "heapB/addr")
}

// BenchmarkBeginRelease is what the proxy pays per login attempt since
// attempts in flight are reserved: Attempt and Begin before the backend,
// Finish (Abandoned: only the release) after, 4096 sources with one
// failure each.
func BenchmarkBeginRelease(b *testing.B) {
	g, in := guardWithFailures(b)
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		k := i % len(in.addrs)
		a := g.Attempt(in.logins[k], in.addrs[k], "")
		a.Begin(ctx)
		a.Finish(Abandoned, "")
		i++
	}
}
