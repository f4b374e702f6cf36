package fleet

import (
	"context"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/mailgate/mailgate/guard"
	"github.com/mailgate/mailgate/internal/testwait"
)

// node is one mailgate node's guard and store, on a shared miniredis.
type node struct {
	g *guard.Guard
	s *Store
}

// testConfig is the guard config of the logic tests: small thresholds,
// no tarpit, so each test counts a few attempts.
func testConfig(t *testing.T, addr string) guard.Config {
	t.Helper()
	c := guard.Defaults()
	c.Tarpit.After = 0
	c.Ban.IPAfter = 3
	c.Ban.NetworkAfter = 0
	c.Lockout.After = 4
	c.Lockout.PerIPAfter = 0
	c.Exemption.MaxFailures = 6
	key := filepath.Join(t.TempDir(), "hashkey")
	if err := os.WriteFile(key, []byte("0123456789abcdef-fleet-secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	c.Shared.Addresses = []string{addr}
	c.Shared.HashKeyFile = key
	return c
}

func newNode(t *testing.T, c guard.Config, now func() time.Time) *node {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	s, err := New(c.Shared, Options{Logger: log, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	g, err := guard.New(c, guard.Options{Shared: s, HashKey: s.HashKey(), Now: now, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); s.Run(ctx, g) }()
	t.Cleanup(func() { cancel(); wg.Wait(); s.Close() })
	testwait.For(t, "store up", s.Up)
	return &node{g, s}
}

// try runs one whole attempt and returns its verdict and events.
func (n *node) try(login, addr, pw string, o guard.Outcome) (guard.Verdict, []guard.Event) {
	a := n.g.Attempt(login, netip.MustParseAddr(addr), pw)
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // no waiting: an attempt held back is refused with Waited
	v := a.Begin(ctx)
	if !v.Allow {
		o = guard.Refused
	}
	return v, a.Finish(o, "")
}

func banned(g *guard.Guard, addr string) bool {
	c, err := g.Accept(netip.MustParseAddr(addr))
	if err == nil {
		c.Close()
		return false
	}
	return true
}

func TestFleetSharesFailuresAndBans(t *testing.T) {
	m := miniredis.RunT(t)
	c := testConfig(t, m.Addr())
	a, b, n3 := newNode(t, c, nil), newNode(t, c, nil), newNode(t, c, nil)
	const src = "198.51.100.7"
	// Three distinct wrong passwords, one per node: ip_after 3 is met
	// on the third node, not three times over.
	a.try("alice", src, "pw1", guard.WrongPassword)
	b.try("bob", src, "pw2", guard.WrongPassword)
	// The same password again on another node counts once.
	a.try("bob", src, "pw2", guard.WrongPassword)
	_, evs := n3.try("carol", src, "pw3", guard.WrongPassword)
	if len(evs) != 1 || evs[0].Kind != guard.EventBanned || evs[0].Prefix.String() != src+"/32" {
		t.Fatalf("third distinct failure on the third node: events %+v, want one BANNED of %s", evs, src)
	}
	if !banned(n3.g, src) {
		t.Fatal("the node that banned still accepts the source")
	}
	for i, n := range []*node{a, b} {
		testwait.For(t, "ban reaches node", func() bool { return banned(n.g, src) })
		if v, _ := n.try("dave", src, "x", guard.WrongPassword); v.Allow {
			t.Fatalf("node %d: a banned source's attempt was allowed", i)
		}
	}
	// An admin lift on one node reaches the others.
	if !b.g.RemoveBan(netip.MustParsePrefix(src + "/32")) {
		t.Fatal("RemoveBan: no ban")
	}
	for _, n := range []*node{a, n3} {
		testwait.For(t, "lift reaches node", func() bool { return !banned(n.g, src) })
	}
}

func TestFleetEscalates(t *testing.T) {
	m := miniredis.RunT(t)
	c := testConfig(t, m.Addr())
	a, b := newNode(t, c, nil), newNode(t, c, nil)
	const src = "198.51.100.8"
	var first guard.Event
	for i, pw := range []string{"1", "2", "3"} {
		_, evs := []*node{a, b, a}[i].try("x", src, pw, guard.WrongPassword)
		if len(evs) > 0 {
			first = evs[0]
		}
	}
	if first.Offence != 1 || first.Duration != c.Ban.Duration {
		t.Fatalf("first ban: %+v", first)
	}
	// The ban ends (an admin lifts the ban but not the history: the
	// store's ban key is simply deleted, as if it had expired).
	m.Del(c.Shared.KeyPrefix + "b:" + src + "/32")
	a.g.ApplyLift(netip.MustParsePrefix(src + "/32"))
	b.g.ApplyLift(netip.MustParsePrefix(src + "/32"))
	var second guard.Event
	for i, pw := range []string{"4", "5", "6"} {
		_, evs := []*node{b, a, b}[i].try("x", src, pw, guard.WrongPassword)
		if len(evs) > 0 {
			second = evs[0]
		}
	}
	if second.Offence != 2 || second.Duration != time.Duration(float64(c.Ban.Duration)*c.Ban.Factor) {
		t.Fatalf("second ban: %+v, want offence 2 and duration x%v", second, c.Ban.Factor)
	}
}

func TestFleetLockoutAndUnlock(t *testing.T) {
	m := miniredis.RunT(t)
	c := testConfig(t, m.Addr())
	a, b := newNode(t, c, nil), newNode(t, c, nil)
	// lockout.after 4 from four addresses over two nodes.
	var locked []guard.Event
	for i := range 4 {
		n := []*node{a, b}[i%2]
		_, evs := n.try("victim", netip.AddrFrom4([4]byte{203, 0, 113, byte(10 + i)}).String(), "guess"+string(rune('a'+i)), guard.WrongPassword)
		locked = append(locked, evs...)
	}
	if len(locked) != 1 || locked[0].Kind != guard.EventLocked || locked[0].Login != "victim" {
		t.Fatalf("events %+v, want one LOCKED of victim", locked)
	}
	if v, _ := a.try("victim", "203.0.113.99", "right", guard.Passed); v.Allow || !v.Locked {
		t.Fatalf("locked login allowed on the other node: %+v", v)
	}
	ls := a.g.Lockouts()
	if len(ls) != 1 || ls[0].Login != "victim" {
		t.Fatalf("Lockouts on the other node: %+v", ls)
	}
	if !a.g.Unlock("VICTIM") {
		t.Fatal("Unlock: not locked")
	}
	if v, _ := b.try("victim", "203.0.113.99", "right", guard.Passed); !v.Allow {
		t.Fatalf("unlocked on node a, still refused on node b: %+v", v)
	}
}

func TestFleetReservationsSpanNodes(t *testing.T) {
	m := miniredis.RunT(t)
	c := testConfig(t, m.Addr())
	a, b := newNode(t, c, nil), newNode(t, c, nil)
	const src = "198.51.100.9"
	ctx := context.Background()
	// ip_after 3: three attempts in flight on two nodes hold the budget.
	var held []*guard.Attempt
	for i, n := range []*node{a, b, a} {
		at := n.g.Attempt("u", netip.MustParseAddr(src), "p"+string(rune('0'+i)))
		if v := at.Begin(ctx); !v.Allow {
			t.Fatalf("attempt %d refused: %+v", i, v)
		}
		held = append(held, at)
	}
	cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	at := b.g.Attempt("u", netip.MustParseAddr(src), "p9")
	v := at.Begin(cctx)
	cancel()
	if v.Allow || !v.Waited {
		t.Fatalf("a fourth attempt past three in flight on other nodes: %+v, want a wait that ran out", v)
	}
	at.Finish(guard.Refused, "")
	// One held attempt succeeds on node a: the waiting attempt on node b
	// goes on (the address is now exempt).
	done := make(chan guard.Verdict, 1)
	go func() {
		at := b.g.Attempt("u", netip.MustParseAddr(src), "p9")
		done <- at.Begin(ctx)
		at.Finish(guard.Abandoned, "")
	}()
	time.Sleep(50 * time.Millisecond)
	held[0].Finish(guard.Passed, "")
	select {
	case v := <-done:
		if !v.Allow {
			t.Fatalf("after a success on node a: %+v", v)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the wait on node b was not woken by the end of an attempt on node a")
	}
	held[1].Finish(guard.Abandoned, "")
	held[2].Finish(guard.Abandoned, "")
}

func TestFleetLeaseOfCrashedNodeEnds(t *testing.T) {
	m := miniredis.RunT(t)
	c := testConfig(t, m.Addr())
	c.Shared.Lease = 10 * time.Second
	var mu sync.Mutex
	clock := time.Now()
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	a, b := newNode(t, c, now), newNode(t, c, now)
	const src = "198.51.100.10"
	for i := range 3 {
		// Node a "crashes" with three reservations: never finished.
		if v := a.g.Attempt("u", netip.MustParseAddr(src), "p"+string(rune('0'+i))).Begin(context.Background()); !v.Allow {
			t.Fatalf("attempt %d: %+v", i, v)
		}
	}
	if v, _ := b.try("u", src, "q", guard.Abandoned); v.Allow {
		t.Fatal("reservations of node a did not count on node b")
	}
	mu.Lock()
	clock = clock.Add(11 * time.Second)
	mu.Unlock()
	m.FastForward(11 * time.Second)
	if v, _ := b.try("u", src, "q", guard.Abandoned); !v.Allow {
		t.Fatalf("leases of a crashed node outlived guard.shared.lease: %+v", v)
	}
}

func TestFleetCompromiseAcrossNodes(t *testing.T) {
	m := miniredis.RunT(t)
	c := testConfig(t, m.Addr())
	c.Compromise.Countries = 2
	c.Compromise.Deny = true
	a, b := newNode(t, c, nil), newNode(t, c, nil)
	var evs []guard.Event
	for i, cc := range []string{"DE", "FR", "BR"} {
		n := []*node{a, b, a}[i]
		at := n.g.Attempt("eve", netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)}), "right")
		if v := at.Begin(context.Background()); !v.Allow {
			t.Fatalf("success %d refused: %+v", i, v)
		}
		evs = append(evs, at.Finish(guard.Passed, cc)...)
	}
	if len(evs) != 1 || evs[0].Kind != guard.EventCompromised || !evs[0].Refuse || len(evs[0].Countries) != 3 {
		t.Fatalf("events %+v, want one COMPROMISED with Refuse and 3 countries", evs)
	}
	if v, _ := b.try("eve", "192.0.2.1", "right", guard.Passed); v.Allow || !v.Locked {
		t.Fatalf("compromised login allowed on the other node: %+v", v)
	}
}

func TestFleetFailOpenAndClosed(t *testing.T) {
	m := miniredis.RunT(t)
	c := testConfig(t, m.Addr())
	c.Shared.Timeout = 100 * time.Millisecond
	a := newNode(t, c, nil)
	// An admin ban made while the store is up, before it goes away.
	if _, err := a.g.AddBan(netip.MustParsePrefix("192.0.2.200/32"), time.Hour, "test"); err != nil {
		t.Fatal(err)
	}
	m.Close()
	// The first call finds the store gone; from then on the node
	// decides alone and keeps its ban copy.
	a.try("u", "198.51.100.20", "p", guard.Abandoned)
	testwait.For(t, "store down", func() bool { return !a.s.Up() })
	if !banned(a.g, "192.0.2.200") {
		t.Fatal("the local ban copy was lost with the store")
	}
	for _, pw := range []string{"1", "2", "3"} {
		a.try("u", "198.51.100.21", pw, guard.WrongPassword)
	}
	if !banned(a.g, "198.51.100.21") {
		t.Fatal("with the store down the node no longer bans on its own")
	}
	// Back: the ban made alone is handed over.
	if err := m.Restart(); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "store back", a.s.Up)
	testwait.For(t, "ban handed over", func() bool { return m.Exists(c.Shared.KeyPrefix + "b:198.51.100.21/32") })

	// fail_closed refuses logins, without counting them.
	c2 := c
	c2.Shared.FailClosed = true
	m2 := miniredis.RunT(t)
	c2.Shared.Addresses = []string{m2.Addr()}
	b := newNode(t, c2, nil)
	m2.Close()
	b.try("u", "198.51.100.22", "p", guard.Abandoned)
	testwait.For(t, "store down", func() bool { return !b.s.Up() })
	v, _ := b.try("u", "198.51.100.22", "p", guard.Passed)
	if v.Allow || !v.Waited {
		t.Fatalf("fail_closed with the store down: %+v, want a refusal not counted", v)
	}
	if banned(b.g, "198.51.100.22") {
		t.Fatal("fail_closed refused the connection")
	}
}
