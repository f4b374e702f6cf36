//go:build integration

package integration

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mailgate/mailgate/integration/redisstack"
)

// bannedPrefix finds the prefix of each BANNED line in a mailgate log.
var bannedPrefix = regexp.MustCompile(`msg=BANNED .*?prefix=(\S+)`)

// TestFleetSentinelFailoverLosesNoBan is Done-when item 5: a master, a
// replica and redis-sentinel; the master is killed in the middle of an
// attack on three nodes that follow Sentinel. After the failover every
// ban any node logged, before, during and after it, is in the new
// master and on every node.
func TestFleetSentinelFailoverLosesNoBan(t *testing.T) {
	if testing.Short() {
		t.Skip("an attack over minutes")
	}
	master := needRedis(t, "")
	dir, err := os.MkdirTemp("", "mg-redis-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	auth := "masteruser admin\nmasterauth admin-password-0123\n"
	replica, err := redisstack.Start(dir, fleetUsers+auth+"replicaof "+strings.Replace(master.Addr(), ":", " ", 1)+"\n")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(replica.Kill)
	sdir, err := os.MkdirTemp("", "mg-sentinel-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sdir) })
	sentinel, err := redisstack.StartSentinel(sdir, "mailgate", master.Addr(),
		"sentinel auth-user mailgate admin\nsentinel auth-pass mailgate admin-password-0123")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sentinel.Kill)
	rc := storeClient(t, replica.Addr())
	if !waitFor(func() bool {
		info, err := rc.Info(context.Background(), "replication").Result()
		return err == nil && strings.Contains(info, "master_link_status:up")
	}, eventually) {
		t.Fatalf("the replica never synchronized; its log:\n%s", replica.Log())
	}

	rig := startFleet(t, fullPlan, 3, fmt.Sprintf("addresses: [%q], sentinel_master: mailgate", sentinel.Addr()))
	plan := fullPlan
	plan.Allowed, plan.Denied, plan.Refused = 60, 30, 10
	var before []string
	killed := time.Now()
	res := runFleetAttack(t, rig, plan, 48, func() {
		mc := storeClient(t, master.Addr())
		waitFor(func() bool { return len(storeBans(t, mc)) >= 5 }, time.Minute)
		before = storeBans(t, mc)
		killed = time.Now()
		master.Kill()
	})
	if len(before) == 0 {
		t.Fatal("no ban before the failover; the test proves nothing")
	}
	sc := redis.NewSentinelClient(&redis.Options{Addr: sentinel.Addr(), Protocol: 2, DisableIdentity: true})
	defer sc.Close()
	if !waitFor(func() bool {
		a, err := sc.GetMasterAddrByName(context.Background(), "mailgate").Result()
		return err == nil && len(a) == 2 && a[0]+":"+a[1] == replica.Addr()
	}, eventually) {
		t.Fatalf("Sentinel never promoted the replica; its log:\n%s", sentinel.Log())
	}
	t.Logf("failover: replica promoted; the attack took %v, the master was killed %v before the promotion was checked", res.elapsed.Round(time.Second), time.Since(killed).Round(time.Second))
	if res.legitFailed != 0 {
		t.Errorf("legitimate user: %d ok, %d failed across the failover", res.legitOK, res.legitFailed)
	}
	// Every ban any node logged, before and after the kill.
	var logged []string
	for _, m := range rig.nodes {
		for _, mm := range bannedPrefix.FindAllStringSubmatch(m.Log(), -1) {
			if !slices.Contains(logged, mm[1]) {
				logged = append(logged, mm[1])
			}
		}
	}
	for _, p := range before {
		if !slices.Contains(logged, p) {
			logged = append(logged, p)
		}
	}
	missing := func() []string {
		have := storeBans(t, rc)
		var out []string
		for _, p := range logged {
			if !slices.Contains(have, p) {
				out = append(out, p)
			}
		}
		return out
	}
	if !waitFor(func() bool { return len(missing()) == 0 }, eventually) {
		t.Errorf("%d of %d bans are not in the new master: %v", len(missing()), len(logged), missing())
	}
	for i, m := range rig.nodes {
		list := nodeBans(t, m.cfgPath)
		for _, p := range logged {
			if !strings.Contains(list, p) {
				t.Errorf("node %d does not hold the ban of %s after the failover", i+1, p)
			}
		}
	}
	t.Logf("%d bans (%d before the failover), all in the new master and on every node", len(logged), len(before))
}
