//go:build integration

package integration

import (
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailgate/mailgate/fleet"
	"github.com/mailgate/mailgate/guard"
)

// startStoreNodeLogged is startStoreNode with the node's log and metrics
// kept for the test.
func startStoreNodeLogged(t testing.TB, c guard.Config, log *syncBuffer, reg *prometheus.Registry) *storeNode {
	t.Helper()
	l := slog.New(slog.NewTextHandler(log, nil))
	s, err := fleet.New(c.Shared, fleet.Options{Logger: l, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	g, err := guard.New(c, guard.Options{Shared: s, HashKey: s.HashKey(), Logger: l})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { s.Run(ctx, g) })
	var once sync.Once
	n := &storeNode{g: g, s: s, stop: func() { once.Do(func() { cancel(); wg.Wait(); s.Close() }) }}
	t.Cleanup(n.stop)
	if !waitFor(s.Up, eventually) {
		t.Fatal("store not up within 60s")
	}
	return n
}

// counterValue is the value of the counter name in reg (0 if absent).
func counterValue(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}

// A store user that may SUBSCRIBE but not PUBLISH leaves the nodes
// subscribed but never woken: the node whose wake-up the store refuses
// logs it once (WARN), counts it, and counts the wake channel as down,
// so its waits poll with the short back-off instead of sitting out the
// 5-10 s safety poll (review round 2, M3).
func TestFleetWakeDeniedCountsTheChannelDown(t *testing.T) {
	rs := redisOnly(t, strings.Replace(fleetUsers, " +publish", "", 1))
	c := storeGuardConfig(t, rs.Addr())
	alog, reg := &syncBuffer{}, prometheus.NewRegistry()
	a := startStoreNodeLogged(t, c, alog, reg)
	b := startStoreNode(t, c)
	if !waitFor(func() bool { return a.s.WakeFeedUp() && b.s.WakeFeedUp() }, eventually) {
		t.Fatal("not subscribed to the wake channel (+subscribe is granted)")
	}
	const src = "198.51.100.61"
	held := holdBudget(t, a, src, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	got := make(chan guard.Verdict, 1)
	go func() {
		at := b.g.Attempt("waiter", netip.MustParseAddr(src), "w")
		v := at.Begin(ctx)
		at.Finish(guard.Abandoned, "")
		got <- v
	}()
	rc := storeClient(t, rs.Addr())
	if !waitFor(func() bool { n, _ := rc.ZCard(context.Background(), c.Shared.KeyPrefix+"waits").Result(); return n > 0 }, eventually) {
		t.Fatal("the waiter never marked what it waits on")
	}
	held[0].Finish(guard.Abandoned, "")
	if a.s.WakeFeedUp() {
		t.Error("the store refused the wake-up, but the node still counts on being woken")
	}
	if n := counterValue(t, reg, "mailgate_shared_state_wake_denied_total"); n != 1 {
		t.Errorf("mailgate_shared_state_wake_denied_total = %v, want 1", n)
	}
	// A second refusal is counted, not logged again.
	held[1].Finish(guard.Abandoned, "")
	held[2].Finish(guard.Abandoned, "")
	if v := <-got; !v.Allow {
		t.Errorf("waiter never got its turn: %+v", v)
	}
	if n := strings.Count(alog.String(), "refused to publish a wake-up"); n != 1 {
		t.Errorf("refusal logged %d times, want once:\n%s", n, alog.String())
	}
	if !strings.Contains(alog.String(), "level=WARN") {
		t.Errorf("no WARN in the node's log:\n%s", alog.String())
	}
}
