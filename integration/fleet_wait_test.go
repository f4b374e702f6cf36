//go:build integration

package integration

import (
	"context"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailgate/mailgate/guard"
)

// scriptCalls is how many scripts the store ran (INFO commandstats:
// evalsha and eval), and every command it ran, script internals
// included.
func scriptCalls(t testing.TB, addr string) (scripts, all int) {
	t.Helper()
	info, err := storeClient(t, addr).Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		calls, _, _ := strings.Cut(strings.TrimPrefix(rest, "calls="), ",")
		n, _ := strconv.Atoi(calls)
		all += n
		if name == "cmdstat_evalsha" || name == "cmdstat_eval" {
			scripts += n
		}
	}
	return scripts, all
}

// N attempts waiting on a budget held on another node cost the store
// O(N) scripts, not one every 100-200 ms each: the store wakes them (the
// wake channel) when the holding attempts end; and every one of them
// gets its turn.
func TestFleetWaitsAreWokenNotPolled(t *testing.T) {
	rs := redisOnly(t, "")
	c := storeGuardConfig(t, rs.Addr()) // ip_after 3
	a, b := startStoreNode(t, c), startStoreNode(t, c)
	if !waitFor(func() bool { return a.s.WakeFeedUp() && b.s.WakeFeedUp() }, eventually) {
		t.Fatal("the nodes did not subscribe to the wake channel")
	}
	const src = "198.51.100.50"
	held := holdBudget(t, a, src, 3)
	if _, err := storeClient(t, rs.Addr()).ConfigResetStat(context.Background()).Result(); err != nil {
		t.Fatal(err)
	}
	const n = 20
	hold := 3 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	verdicts := make([]guard.Verdict, n)
	for i := range n {
		wg.Go(func() {
			at := b.g.Attempt("waiter"+strconv.Itoa(i), netip.MustParseAddr(src), "w")
			verdicts[i] = at.Begin(ctx)
			if verdicts[i].Allow {
				time.Sleep(20 * time.Millisecond)
			}
			at.Finish(guard.Abandoned, "")
		})
	}
	// The waiters wait while the budget is held elsewhere.
	time.Sleep(hold)
	for _, at := range held {
		at.Finish(guard.Abandoned, "")
	}
	wg.Wait()
	for i, v := range verdicts {
		if !v.Allow {
			t.Errorf("waiter %d never got its turn: %+v", i, v)
		}
	}
	scripts, all := scriptCalls(t, rs.Addr())
	t.Logf("%d waiters over %v: %d scripts, %d commands in all (script internals included)", n, hold, scripts, all)
	// Each waiter: one Begin that waits, a few after wake-ups, one
	// Begin that is allowed, one Finish; plus the holders' Finish.
	// Polling every 100-200 ms would have cost n*hold/150ms = 400.
	if limit := 6*n + 10; scripts > limit {
		t.Fatalf("%d waiters cost %d scripts, want at most %d: the waits poll the store", n, scripts, limit)
	}
}

// preWakeACL is the store user docs/fleet.md asked for before the wake
// channel (no ZMSCORE, PUBLISH, SUBSCRIBE, channels): an upgraded node
// must go on deciding logins through it, its waits polling instead.
const preWakeACL = "user mailgate on >fleet-store-password-0123 ~mailgate:* resetchannels -@all +@connection " +
	"+evalsha +eval +script|load +get +set +del +mget +zadd +zrem +zcard +zcount +zscore " +
	"+zrange +zrangebyscore +zremrangebyscore +zremrangebyrank +pexpire +xadd +xread " +
	"+xinfo|stream +scan +select\nuser admin on >admin-password-0123 ~* &* +@all\nuser default off\n"

// With the store user of before the wake channel, attempts still go
// through the store and waits still get their turn (by polling).
func TestFleetWaitsPollWithoutWakeChannel(t *testing.T) {
	rs := redisOnly(t, preWakeACL)
	c := storeGuardConfig(t, rs.Addr())
	a, b := startStoreNode(t, c), startStoreNode(t, c)
	const src = "198.51.100.60"
	held := holdBudget(t, a, src, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	const n = 4
	verdicts := make([]guard.Verdict, n)
	for i := range n {
		wg.Go(func() {
			at := b.g.Attempt("waiter"+strconv.Itoa(i), netip.MustParseAddr(src), "w")
			verdicts[i] = at.Begin(ctx)
			at.Finish(guard.Abandoned, "")
		})
	}
	time.Sleep(time.Second)
	if a.s.WakeFeedUp() || b.s.WakeFeedUp() {
		t.Fatal("subscribed to the wake channel without the permission")
	}
	// One wrong password (recorded by the finish script), two abandoned.
	for i, at := range held {
		o := guard.Abandoned
		if i == 0 {
			o = guard.WrongPassword
		}
		if evs := at.Finish(o, ""); len(evs) != 0 {
			t.Fatalf("events %+v", evs)
		}
	}
	wg.Wait()
	for i, v := range verdicts {
		if !v.Allow {
			t.Errorf("waiter %d never got its turn: %+v", i, v)
		}
	}
	// The failure was recorded in the store: the finish script ran.
	if n, err := storeClient(t, rs.Addr()).ZCard(context.Background(), c.Shared.KeyPrefix+"fi:"+src).Result(); err != nil || n != 1 {
		t.Fatalf("failures of %s in the store: %d, %v; want 1", src, n, err)
	}
}

// holdBudget begins n attempts of src on node a and keeps them open, so
// that src's parallel-attempt budget is held there.
func holdBudget(t *testing.T, a *storeNode, src string, n int) []*guard.Attempt {
	t.Helper()
	var held []*guard.Attempt
	for i := range n {
		at := a.g.Attempt("holder", netip.MustParseAddr(src), "h"+strconv.Itoa(i))
		if v := at.Begin(context.Background()); !v.Allow {
			t.Fatalf("holding attempt %d: %+v", i, v)
		}
		held = append(held, at)
	}
	return held
}
