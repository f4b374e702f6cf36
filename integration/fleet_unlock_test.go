//go:build integration

package integration

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mailgate/mailgate/guard"
)

// fillPairIndex gives login n (login, address) windows and their index
// entries, as many failures from as many addresses would, scored now.
func fillPairIndex(t *testing.T, rc *redis.Client, prefix, login string, n int) {
	t.Helper()
	ctx := context.Background()
	now := float64(time.Now().UnixMilli())
	for done := 0; done < n; {
		p := rc.Pipeline()
		for i := done; i < min(n, done+2000); i++ {
			a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}).String()
			p.ZAdd(ctx, prefix+"fx:"+login, redis.Z{Score: now - float64(i%1000), Member: a + "/32"})
			p.ZAdd(ctx, prefix+"fp:"+strconv.Itoa(len(login))+":"+login+"|"+a, redis.Z{Score: now, Member: "h"})
		}
		if _, err := p.Exec(ctx); err != nil {
			t.Fatal(err)
		}
		done = min(n, done+2000)
	}
}

// slowlogArgs is the largest number of arguments of a command the store
// ran since the slow log was reset (it logs every command: threshold 0).
func slowlogArgs(t *testing.T, rc *redis.Client) (most int, cmd string) {
	t.Helper()
	entries, err := rc.SlowLogGet(context.Background(), -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		n := len(e.Args)
		if n > 0 {
			// Long commands are logged with their first 31 arguments and
			// "... (N more arguments)".
			var more int
			if _, err := fmt.Sscanf(e.Args[n-1], "... (%d more arguments)", &more); err == nil {
				n = n - 1 + more
			}
		}
		if n > most {
			most, cmd = n, e.Args[0]
		}
	}
	return most, cmd
}

// An unlock of a login sprayed from many addresses lifts the lockout
// with one small script and deletes the (login, address) windows in
// batches, so no single call blocks the store for every node (measured
// before: 700k entries in one EVALSHA blocked Redis 1.74 s and the fleet
// failed open); and a login's index keeps only its newest entries
// (review round 2, M2).
func TestFleetUnlockOfASprayedLoginIsBatched(t *testing.T) {
	rs := redisOnly(t, "")
	c := storeGuardConfig(t, rs.Addr())
	n := startStoreNode(t, c)
	rc := storeClient(t, rs.Addr())
	ctx := context.Background()
	prefix := c.Shared.KeyPrefix
	const login, entries = "sprayed@example.org", 30000

	fillPairIndex(t, rc, prefix, login, entries)
	until := time.Now().Add(time.Hour).UnixMilli()
	if err := rc.Set(ctx, prefix+"k:"+login, fmt.Sprintf("%d|%d|0|test lockout", until, time.Now().UnixMilli()), time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	rc.ZAdd(ctx, prefix+"locks", redis.Z{Score: float64(until), Member: login})
	for _, cmd := range [][]any{
		{"config", "set", "slowlog-log-slower-than", "0"},
		{"config", "set", "slowlog-max-len", "100000"},
		{"slowlog", "reset"},
	} {
		if err := rc.Do(ctx, cmd...).Err(); err != nil {
			t.Fatal(err)
		}
	}
	was, err := n.s.Unlock(ctx, login)
	if err != nil || !was {
		t.Fatalf("Unlock = %v, %v; want true, nil", was, err)
	}
	if most, cmd := slowlogArgs(t, rc); most > 1002 {
		t.Errorf("a call carried %d arguments (%s), want at most a batch of 1000 and its key", most, cmd)
	}
	if err := rc.Do(ctx, "config", "set", "slowlog-log-slower-than", "10000").Err(); err != nil {
		t.Fatal(err)
	}
	if e, _ := rc.Exists(ctx, prefix+"k:"+login, prefix+"fx:"+login).Result(); e != 0 {
		t.Errorf("%d of the lockout and the index left after the unlock", e)
	}
	if left, _, err := rc.Scan(ctx, 0, prefix+"fp:*", 100000).Result(); err != nil || len(left) != 0 {
		t.Errorf("%d (login, address) windows left after the unlock (%v)", len(left), err)
	}
	if locked, _ := n.s.Lockouts(ctx); len(locked) != 0 {
		t.Errorf("still locked: %+v", locked)
	}

	// The index is capped: the next failure trims it to the newest 10,000.
	const other = "capped@example.org"
	fillPairIndex(t, rc, prefix, other, entries)
	a := n.g.Attempt(other, netip.MustParseAddr("192.0.2.200"), "wrong")
	if v := a.Begin(ctx); !v.Allow {
		t.Fatalf("refused: %+v", v)
	}
	a.Finish(guard.WrongPassword, "")
	if got, err := rc.ZCard(ctx, prefix+"fx:"+other).Result(); err != nil || got != 10000 {
		t.Errorf("index of %d entries after a failure (%v), want 10000", got, err)
	}
}
