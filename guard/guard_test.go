package guard

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is the guard's clock in tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// newTestGuard builds a Guard on a fake clock from Defaults changed by mod.
func newTestGuard(t testing.TB, mod func(*Config)) (*Guard, *fakeClock) {
	t.Helper()
	clk := &fakeClock{t: time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)}
	c := Defaults()
	if mod != nil {
		mod(&c)
	}
	g, err := New(c, Options{Now: clk.Now, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return g, clk
}

type logWriter struct{ t testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	if _, ok := t.(*testing.B); ok {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(logWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

var (
	addr1    = netip.MustParseAddr("192.0.2.1")
	addr2    = netip.MustParseAddr("192.0.2.2")
	addrFar  = netip.MustParseAddr("198.51.100.7")
	trustedA = netip.MustParseAddr("203.0.113.5")
)

// fail records n distinct wrong passwords from addr, login i for the
// i-th (so only address counters add up), and returns all events.
func failMany(g *Guard, addr netip.Addr, n int, tag string) []Event {
	var ev []Event
	for i := range n {
		ev = append(ev, g.failure(fmt.Sprintf("%s%d@example.org", tag, i), addr, fmt.Sprintf("pw-%s-%d", tag, i))...)
	}
	return ev
}

func kinds(ev []Event) []string {
	var out []string
	for _, e := range ev {
		out = append(out, string(e.Kind)+" "+e.Prefix.String()+e.Login)
	}
	return out
}

func findEvent(ev []Event, k EventKind, p string) (Event, bool) {
	for _, e := range ev {
		if e.Kind == k && (p == "" || e.Prefix.String() == p || e.Login == p) {
			return e, true
		}
	}
	return Event{}, false
}

func TestSamePasswordCountsOnce(t *testing.T) {
	g, _ := newTestGuard(t, nil)
	var ev []Event
	for range 50 {
		ev = append(ev, g.failure("alice@example.org", addr1, "stale-password")...)
	}
	if len(ev) != 0 {
		t.Fatalf("one stale password retried 50 times raised %v, want nothing", kinds(ev))
	}
	if v := g.checkNow("alice@example.org", addr1); !v.Allow || v.Delay != 0 {
		t.Fatalf("Check after one distinct failure = %+v, want allowed without delay", v)
	}
	// The same password for another login is a different guess
	// (spraying) and counts for the address.
	ev = failMany(g, addr1, 9, "spray")
	if _, ok := findEvent(ev, EventBanned, "192.0.2.1/32"); !ok {
		t.Fatalf("1 + 9 distinct failures raised %v, want BANNED 192.0.2.1/32", kinds(ev))
	}
}

func TestWindowSlides(t *testing.T) {
	g, clk := newTestGuard(t, nil)
	if ev := failMany(g, addr1, 9, "a"); len(ev) != 0 {
		t.Fatalf("9 failures raised %v, want nothing below ban.ip_after 10", kinds(ev))
	}
	clk.Advance(16 * time.Minute) // past guard.window
	if ev := failMany(g, addr1, 9, "b"); len(ev) != 0 {
		t.Fatalf("9 fresh failures after the window raised %v; old ones should have aged out", kinds(ev))
	}
	clk.Advance(time.Minute)
	ev := failMany(g, addr1, 1, "c")
	if _, ok := findEvent(ev, EventBanned, "192.0.2.1/32"); !ok {
		t.Fatalf("10th failure within the window raised %v, want BANNED", kinds(ev))
	}
}

func TestTarpitGrows(t *testing.T) {
	g, _ := newTestGuard(t, func(c *Config) { c.Ban.IPAfter = 0; c.Lockout.PerIPAfter = 0 })
	want := []time.Duration{0, 0, 0, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 15 * time.Second, 15 * time.Second}
	for i, w := range want {
		v := g.checkNow("alice@example.org", addr1)
		if v.Delay != w || !v.Allow {
			t.Fatalf("after %d failures Check = %+v, want allowed with delay %v", i, v, w)
		}
		g.failure("alice@example.org", addr1, fmt.Sprintf("guess-%d", i))
	}
	// Another address is not slowed down.
	if v := g.checkNow("alice@example.org", addr2); v.Delay != 0 {
		t.Fatalf("other address delay = %v, want 0", v.Delay)
	}
}

func TestBanAndExpiry(t *testing.T) {
	g, clk := newTestGuard(t, nil)
	ev := failMany(g, addr1, 10, "u")
	e, ok := findEvent(ev, EventBanned, "192.0.2.1/32")
	if !ok {
		t.Fatalf("10 failures raised %v, want BANNED 192.0.2.1/32", kinds(ev))
	}
	if e.Duration != 15*time.Minute || e.Offence != 1 || e.Failures != 10 {
		t.Fatalf("first ban = %+v, want 15m, offence 1, 10 failures", e)
	}
	if _, err := g.Accept(addr1); !errors.Is(err, ErrBanned) {
		t.Fatalf("Accept(banned) = %v, want ErrBanned", err)
	}
	if v := g.checkNow("x@example.org", addr1); v.Allow {
		t.Fatalf("Check(banned) = %+v, want refused", v)
	}
	c, err := g.Accept(addr2)
	if err != nil {
		t.Fatalf("Accept(neighbour) = %v, want admitted", err)
	}
	c.Close()
	clk.Advance(15*time.Minute + time.Second)
	c, err = g.Accept(addr1)
	if err != nil {
		t.Fatalf("Accept after the ban ended = %v, want admitted", err)
	}
	c.Close()
	if len(g.Bans()) != 0 {
		t.Fatalf("Bans() after expiry = %v, want none", g.Bans())
	}
}

func TestBanEscalation(t *testing.T) {
	g, clk := newTestGuard(t, func(c *Config) { c.Ban.Max = 2 * time.Hour })
	want := []time.Duration{15 * time.Minute, time.Hour, 2 * time.Hour, 2 * time.Hour}
	for i, w := range want {
		ev := failMany(g, addr1, 10, fmt.Sprintf("r%d-", i))
		e, ok := findEvent(ev, EventBanned, "192.0.2.1/32")
		if !ok || e.Duration != w || e.Offence != i+1 {
			t.Fatalf("ban %d: events %v (%+v), want BANNED for %v, offence %d", i+1, kinds(ev), e, w, i+1)
		}
		clk.Advance(w + time.Second)
	}
	// A week later the history is forgotten.
	clk.Advance(7*24*time.Hour + time.Second)
	ev := failMany(g, addr1, 10, "late")
	if e, ok := findEvent(ev, EventBanned, "192.0.2.1/32"); !ok || e.Duration != 15*time.Minute || e.Offence != 1 {
		t.Fatalf("after ban.forget_after: %+v, want a first 15m ban again", e)
	}
}

func TestNetworkBanIPv4(t *testing.T) {
	g, _ := newTestGuard(t, nil)
	var ev []Event
	for i := range 4 {
		a := netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + i)})
		ev = append(ev, failMany(g, a, 8, fmt.Sprintf("n%d-", i))...)
	}
	if _, ok := findEvent(ev, EventBanned, "192.0.2.0/24"); !ok {
		t.Fatalf("32 failures from 4 addresses of one /24 raised %v, want BANNED 192.0.2.0/24", kinds(ev))
	}
	if _, err := g.Accept(netip.MustParseAddr("192.0.2.200")); !errors.Is(err, ErrBanned) {
		t.Fatalf("Accept(other address in banned /24) = %v, want ErrBanned", err)
	}
	c, err := g.Accept(addrFar)
	if err != nil {
		t.Fatalf("Accept(other network) = %v", err)
	}
	c.Close()
}

func TestNetworkBanIPv6Rotation(t *testing.T) {
	g, _ := newTestGuard(t, nil)
	// An attacker rotating through /64s of one /48: no /64 gets 30,
	// the /48 does.
	var ev []Event
	for i := range 6 {
		a := netip.MustParseAddr(fmt.Sprintf("2001:db8:1:%x::1", i))
		ev = append(ev, failMany(g, a, 6, fmt.Sprintf("v%d-", i))...)
	}
	if _, ok := findEvent(ev, EventBanned, "2001:db8:1::/48"); !ok {
		t.Fatalf("36 failures across six /64s raised %v, want BANNED 2001:db8:1::/48", kinds(ev))
	}
	for _, e := range ev {
		if e.Kind == EventBanned && e.Prefix.Bits() == 64 {
			t.Fatalf("unexpected /64 ban %v", e.Prefix)
		}
	}
	if _, err := g.Accept(netip.MustParseAddr("2001:db8:1:ffff::2")); !errors.Is(err, ErrBanned) {
		t.Fatalf("Accept(inside banned /48) = %v, want ErrBanned", err)
	}
}

func TestIPv4MappedIsSameSource(t *testing.T) {
	g, _ := newTestGuard(t, nil)
	failMany(g, netip.MustParseAddr("::ffff:192.0.2.1"), 10, "m")
	if _, err := g.Accept(addr1); !errors.Is(err, ErrBanned) {
		t.Fatalf("Accept(192.0.2.1) after failures as ::ffff:192.0.2.1 = %v, want ErrBanned", err)
	}
}

func TestTrustedNeverBanned(t *testing.T) {
	g, _ := newTestGuard(t, func(c *Config) { c.TrustedNetworks = []string{"203.0.113.0/24"} })
	ev := failMany(g, trustedA, 60, "t")
	for i := range 20 {
		ev = append(ev, g.failure("alice@example.org", trustedA, fmt.Sprint("guess", i))...)
		ev = append(ev, g.denied("bob@example.org", trustedA, fmt.Sprint("x", i))...)
	}
	if len(ev) != 0 {
		t.Fatalf("failures from a trusted network raised %v, want nothing", kinds(ev))
	}
	c, err := g.Accept(trustedA)
	if err != nil {
		t.Fatalf("Accept(trusted) = %v", err)
	}
	c.Close()
	if v := g.checkNow("alice@example.org", trustedA); !v.Allow || v.Delay == 0 {
		t.Fatalf("Check(trusted after failures) = %+v, want allowed but slowed down", v)
	}
	if _, err := g.AddBan(netip.MustParsePrefix("203.0.0.0/16"), time.Hour, "x"); !errors.Is(err, ErrTrusted) {
		t.Fatalf("AddBan(overlapping trusted) = %v, want ErrTrusted", err)
	}
}

func TestLockoutDistributed(t *testing.T) {
	g, clk := newTestGuard(t, func(c *Config) { c.TrustedNetworks = []string{"203.0.113.0/24"} })
	const alice = "alice@example.org"
	home := netip.MustParseAddr("198.51.100.20")
	g.success(alice, home, "DE")

	// Failures from alice's own network do not count towards her
	// lockout (her phone there); 9 stay below the address ban.
	for i := range 9 {
		if ev := g.failure(alice, netip.MustParseAddr("198.51.100.21"), fmt.Sprint("old", i)); len(ev) != 0 {
			t.Fatalf("failure from alice's known network raised %v", kinds(ev))
		}
	}
	// Ten distinct guesses, each from its own address far apart.
	var ev []Event
	for i := range 10 {
		a := netip.AddrFrom4([4]byte{10, byte(i), 0, 1})
		ev = append(ev, g.failure(alice, a, fmt.Sprint("guess", i))...)
		if _, ok := findEvent(ev, EventLocked, alice); ok && i < 9 {
			t.Fatalf("LOCKED after %d distributed guesses; failures from the known network counted", i+1)
		}
	}
	e, ok := findEvent(ev, EventLocked, alice)
	if !ok || e.Duration != time.Hour {
		t.Fatalf("10 distributed guesses raised %v, want LOCKED %s for 1h", kinds(ev), alice)
	}
	if v := g.checkNow("Alice@Example.org", netip.MustParseAddr("10.200.0.1")); v.Allow {
		t.Fatalf("Check(locked login, new untrusted source, other case) = %+v, want refused", v)
	}
	if v := g.checkNow(alice, trustedA); !v.Allow {
		t.Fatalf("Check(locked login, trusted network) = %+v, want allowed", v)
	}
	if v := g.checkNow(alice, netip.MustParseAddr("198.51.100.99")); !v.Allow {
		t.Fatalf("Check(locked login, network of a recent success) = %+v, want allowed", v)
	}
	if v := g.checkNow("bob@example.org", netip.MustParseAddr("10.200.0.1")); !v.Allow {
		t.Fatalf("Check(other login) = %+v, want allowed", v)
	}
	if got := g.Lockouts(); len(got) != 1 || got[0].Login != alice {
		t.Fatalf("Lockouts() = %+v, want alice", got)
	}
	clk.Advance(time.Hour + time.Second)
	if v := g.checkNow(alice, netip.MustParseAddr("10.200.0.1")); !v.Allow {
		t.Fatalf("Check after lockout.duration = %+v, want allowed", v)
	}
}

func TestLockoutForgetsOldSuccess(t *testing.T) {
	g, clk := newTestGuard(t, nil)
	const alice = "alice@example.org"
	home := netip.MustParseAddr("198.51.100.20")
	g.success(alice, home, "DE")
	clk.Advance(31 * 24 * time.Hour) // past lockout.remember_success
	for i := range 10 {
		g.failure(alice, netip.AddrFrom4([4]byte{10, byte(i), 0, 1}), fmt.Sprint("guess", i))
	}
	if v := g.checkNow(alice, home); v.Allow {
		t.Fatalf("Check from a network not used for 31 days = %+v, want refused", v)
	}
}

func TestUnlock(t *testing.T) {
	g, _ := newTestGuard(t, nil)
	const alice = "alice@example.org"
	for i := range 10 {
		g.failure(alice, netip.AddrFrom4([4]byte{10, byte(i), 0, 1}), fmt.Sprint("guess", i))
	}
	for i := range 5 { // and blocked from one address
		g.failure(alice, addr1, fmt.Sprint("more", i))
	}
	if v := g.checkNow(alice, addr1); v.Allow {
		t.Fatalf("Check(blocked pair) = %+v", v)
	}
	if !g.Unlock("ALICE@example.org") {
		t.Fatal("Unlock(locked login) = false")
	}
	if v := g.checkNow(alice, addr1); !v.Allow {
		t.Fatalf("Check(pair) after Unlock = %+v, want allowed", v)
	}
	if g.Unlock(alice) {
		t.Fatal("second Unlock = true, want false")
	}
	if v := g.checkNow(alice, netip.MustParseAddr("10.200.0.1")); !v.Allow {
		t.Fatalf("Check after Unlock = %+v, want allowed", v)
	}
}

func TestPerIPBlock(t *testing.T) {
	g, clk := newTestGuard(t, nil)
	const alice = "alice@example.org"
	g.success("carol@example.org", addr1, "DE") // exempt: no IP bans
	for i := range 5 {
		g.failure(alice, addr1, fmt.Sprint("guess", i))
	}
	if v := g.checkNow(alice, addr1); v.Allow {
		t.Fatalf("Check after 5 guesses on one login from one (exempt) address = %+v, want refused", v)
	}
	if v := g.checkNow("bob@example.org", addr1); !v.Allow {
		t.Fatalf("Check(other login, same address) = %+v, want allowed", v)
	}
	if v := g.checkNow(alice, addr2); !v.Allow {
		t.Fatalf("Check(same login, other address) = %+v, want allowed", v)
	}
	clk.Advance(16 * time.Minute)
	if v := g.checkNow(alice, addr1); !v.Allow {
		t.Fatalf("Check after the window = %+v, want allowed", v)
	}
}

func TestSuccessExemption(t *testing.T) {
	g, clk := newTestGuard(t, nil)
	g.success("boss@example.org", addr1, "DE") // the office NAT
	ev := failMany(g, addr1, 40, "phone")
	if len(ev) != 0 {
		t.Fatalf("failures from an exempt address raised %v, want nothing", kinds(ev))
	}
	c, err := g.Accept(addr1)
	if err != nil {
		t.Fatalf("Accept(exempt) = %v", err)
	}
	c.Close()
	// The ceiling: an exempt address spraying many logins is banned anyway.
	ev = failMany(g, addr1, 10, "spray")
	if _, ok := findEvent(ev, EventBanned, "192.0.2.1/32"); !ok {
		t.Fatalf("50 failures from an exempt address raised %v, want BANNED (exemption.max_failures)", kinds(ev))
	}
	if _, err := g.Accept(addr1); !errors.Is(err, ErrBanned) {
		t.Fatalf("Accept after the ceiling ban = %v, want ErrBanned", err)
	}

	// After exemption.duration the exemption is gone.
	g2, clk2 := newTestGuard(t, nil)
	g2.success("boss@example.org", addr1, "DE")
	clk2.Advance(25 * time.Hour)
	ev = failMany(g2, addr1, 10, "x")
	if _, ok := findEvent(ev, EventBanned, "192.0.2.1/32"); !ok {
		t.Fatalf("failures after the exemption ended raised %v, want BANNED", kinds(ev))
	}
	_ = clk
}

func TestExemptAddressAndBans(t *testing.T) {
	g, _ := newTestGuard(t, nil)
	// An automatic network ban from neighbours does not shut the office out.
	g.success("boss@example.org", addr1, "DE")
	for i := range 4 {
		failMany(g, netip.AddrFrom4([4]byte{192, 0, 2, byte(50 + i)}), 8, fmt.Sprintf("n%d-", i))
	}
	c, err := g.Accept(addr1)
	if err != nil {
		t.Fatalf("Accept(exempt address in an automatically banned /24) = %v", err)
	}
	c.Close()
	// An admin ban does.
	if _, err := g.AddBan(netip.MustParsePrefix("192.0.2.1/32"), time.Hour, "admin"); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Accept(addr1); !errors.Is(err, ErrBanned) {
		t.Fatalf("Accept(exempt address under an admin ban) = %v, want ErrBanned", err)
	}
}

func TestDeniedCountsForBansNotLockout(t *testing.T) {
	g, _ := newTestGuard(t, nil)
	var ev []Event
	for i := range 10 {
		ev = append(ev, g.denied("alice@example.org", addr1, fmt.Sprint("pw", i))...)
	}
	if _, ok := findEvent(ev, EventBanned, "192.0.2.1/32"); !ok {
		t.Fatalf("10 policy denials raised %v, want BANNED", kinds(ev))
	}
	if _, ok := findEvent(ev, EventLocked, ""); ok || len(g.Lockouts()) != 0 {
		t.Fatalf("policy denials locked the login: %v", kinds(ev))
	}
}

func TestCompromise(t *testing.T) {
	for _, deny := range []bool{false, true} {
		t.Run(fmt.Sprint("deny=", deny), func(t *testing.T) {
			g, clk := newTestGuard(t, func(c *Config) { c.Compromise.Deny = deny })
			const alice = "alice@example.org"
			for i, cc := range []string{"DE", "FR", "DE", "US", ""} {
				if ev := g.success(alice, netip.AddrFrom4([4]byte{10, 0, byte(i), 1}), cc); len(ev) != 0 {
					t.Fatalf("success %d (%q) raised %v; 3 countries is not more than 3", i, cc, kinds(ev))
				}
			}
			clk.Advance(time.Hour)
			ev := g.success(alice, netip.MustParseAddr("10.9.9.9"), "RU")
			e, ok := findEvent(ev, EventCompromised, alice)
			if !ok || len(e.Countries) != 4 || e.Refuse != deny {
				t.Fatalf("4th country raised %v (%+v), want COMPROMISED with 4 countries, Refuse %v", kinds(ev), e, deny)
			}
			v := g.checkNow(alice, netip.AddrFrom4([4]byte{10, 0, 0, 1})) // a known network
			if v.Allow == deny {
				t.Fatalf("Check after COMPROMISED with deny=%v = %+v", deny, v)
			}
			if deny {
				if !g.Unlock(alice) {
					t.Fatal("Unlock(compromised) = false")
				}
				if v := g.checkNow(alice, netip.AddrFrom4([4]byte{10, 0, 0, 1})); !v.Allow {
					t.Fatalf("Check after Unlock = %+v", v)
				}
			}
		})
	}
}

func TestCompromiseWindowSlides(t *testing.T) {
	g, clk := newTestGuard(t, nil)
	const alice = "alice@example.org"
	for _, cc := range []string{"DE", "FR", "US", "RU", "JP"} {
		if ev := g.success(alice, addr1, cc); len(ev) != 0 {
			t.Fatalf("travel over days raised %v", kinds(ev))
		}
		clk.Advance(9 * time.Hour) // three per 24 hours at most
	}
}

func TestAcceptDeny(t *testing.T) {
	clk := &fakeClock{t: time.Now()}
	c := Defaults()
	c.DenyNetworks = []string{"198.51.100.0/24"}
	c.DenyCountries = []string{"RU"}
	c.TrustedNetworks = []string{"192.0.2.128/25"}
	g, err := New(c, Options{Now: clk.Now, Country: func(a netip.Addr) string {
		if a.Is4() && a.As4()[0] == 192 {
			return "RU"
		}
		return "DE"
	}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		addr string
		want error
	}{
		{"198.51.100.9", ErrDenied},
		{"192.0.2.1", ErrDenied},
		{"192.0.2.200", nil}, // trusted beats the country rule
		{"203.0.113.1", nil},
	} {
		conn, err := g.Accept(netip.MustParseAddr(tc.addr))
		if !errors.Is(err, tc.want) {
			t.Errorf("Accept(%s) = %v, want %v", tc.addr, err, tc.want)
		}
		var re *RefusedError
		if err != nil && (!errors.As(err, &re) || re.Reason == "") {
			t.Errorf("Accept(%s) error %v carries no reason", tc.addr, err)
		}
		if conn != nil {
			conn.Close()
		}
	}
}

func TestConnectionLimits(t *testing.T) {
	g, _ := newTestGuard(t, func(c *Config) {
		c.Connections = ConnectionsConfig{MaxTotal: 6, MaxPerIP: 3, MaxPerNetwork: 4, MaxPreAuth: 5, MaxPreAuthPerIP: 2}
		c.TrustedNetworks = []string{"203.0.113.0/24"}
	})
	accept := func(a netip.Addr) *Conn {
		t.Helper()
		c, err := g.Accept(a)
		if err != nil {
			t.Fatalf("Accept(%v) = %v, want admitted (stats %+v)", a, err, g.ConnStats())
		}
		return c
	}
	refuse := func(a netip.Addr, what string) {
		t.Helper()
		c, err := g.Accept(a)
		if !errors.Is(err, ErrTooManyConns) {
			if c != nil {
				c.Close()
			}
			t.Fatalf("Accept(%v) = %v, want ErrTooManyConns (%s)", a, err, what)
		}
	}
	a1, a2 := accept(addr1), accept(addr1)
	refuse(addr1, "max_preauth_per_ip")
	a1.LoggedIn()
	a1.LoggedIn() // idempotent
	a3 := accept(addr1)
	a2.LoggedIn()
	refuse(addr1, "max_per_ip")
	b1 := accept(addr2)
	refuse(netip.MustParseAddr("192.0.2.3"), "max_per_network")
	f1 := accept(addrFar)
	f2 := accept(netip.MustParseAddr("198.51.99.7")) // 6 open from untrusted sources
	refuse(netip.MustParseAddr("198.51.98.7"), "max_total")
	t1 := accept(trustedA) // trusted: not held to the totals
	if s := g.ConnStats(); s.Total != 7 || s.PreAuth != 5 {
		t.Fatalf("ConnStats = %+v, want 7 total, 5 pre-auth", s)
	}
	for _, c := range []*Conn{a1, a2, a3, b1, f1, f2, t1} {
		c.Close()
		c.Close() // idempotent
	}
	if s := g.ConnStats(); s != (ConnStats{}) {
		t.Fatalf("ConnStats after closing all = %+v, want zero", s)
	}
	g.connMu.Lock()
	left := len(g.perIP) + len(g.perNet) + len(g.perNetPre) + g.cappedTotal + g.cappedPre
	g.connMu.Unlock()
	if left != 0 {
		t.Fatalf("%d per-source entries left after all closed", left)
	}
}

func TestPreAuthTotal(t *testing.T) {
	g, _ := newTestGuard(t, func(c *Config) { c.Connections.MaxPreAuth = 2 })
	c1, _ := g.Accept(addr1)
	c2, _ := g.Accept(addr2)
	if _, err := g.Accept(addrFar); !errors.Is(err, ErrTooManyConns) {
		t.Fatalf("third pre-auth connection: %v, want ErrTooManyConns", err)
	}
	c1.LoggedIn()
	c3, err := g.Accept(addrFar)
	if err != nil {
		t.Fatalf("after one logged in: %v", err)
	}
	c1.Close()
	c2.Close()
	c3.Close()
}

func TestCaseFolding(t *testing.T) {
	g, _ := newTestGuard(t, nil)
	for i, l := range []string{"Alice@x.org", "ALICE@X.ORG", "alice@x.org", "aLiCe@x.org", "alice@X.org"} {
		g.failure(l, addr1, fmt.Sprint("g", i))
	}
	if v := g.checkNow("alice@x.org", addr1); v.Allow {
		t.Fatalf("5 guesses under different cases = %+v, want the per-address block", v)
	}
}

func TestEventsNeverCarryPasswords(t *testing.T) {
	var buf bytes.Buffer
	g, _ := newTestGuard(t, nil)
	log := slog.New(slog.NewTextHandler(&buf, nil))
	for i := range 12 {
		for _, e := range g.failure("alice@example.org", addr1, fmt.Sprintf("Secret-%d", i)) {
			e.Log(t.Context(), log)
		}
	}
	out := buf.String()
	if !strings.Contains(out, "msg=BANNED") || !strings.Contains(out, "remote=192.0.2.1") || !strings.Contains(out, "msg=LOCKED") {
		t.Fatalf("log lacks BANNED/LOCKED lines with remote=:\n%s", out)
	}
	if strings.Contains(out, "Secret-") {
		t.Fatalf("log contains a password:\n%s", out)
	}
}

func TestFingerprint(t *testing.T) {
	g, _ := newTestGuard(t, nil)
	if fp := g.Fingerprint("x"); fp != "" {
		t.Fatalf("Fingerprint without secret = %q, want empty", fp)
	}
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("0123456789abcdef0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	g, _ = newTestGuard(t, func(c *Config) { c.FingerprintSecretFile = secret })
	a, b, a2 := g.Fingerprint("hunter2"), g.Fingerprint("hunter3"), g.Fingerprint("hunter2")
	if len(a) != 8 || a != a2 || a == b || strings.Contains(a, "hunter") {
		t.Fatalf("fingerprints %q %q %q: want 8 hex chars, stable, distinct", a, a2, b)
	}
	if err := os.WriteFile(secret, []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := Defaults()
	c.FingerprintSecretFile = secret
	if _, err := New(c, Options{}); err == nil || !strings.Contains(err.Error(), "guard.fingerprint_secret_file") {
		t.Fatalf("New with a 5-byte secret = %v, want a guard.fingerprint_secret_file error", err)
	}
	c.FingerprintSecretFile = filepath.Join(dir, "missing")
	if _, err := New(c, Options{}); err == nil {
		t.Fatal("New with a missing secret file succeeded")
	}
}

func TestMemoryBounded(t *testing.T) {
	g, _ := newTestGuard(t, func(c *Config) { c.MaxTracked = 100 })
	for i := range 5000 {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 1})
		g.failure(fmt.Sprint("u", i), a, "pw")
		g.success(fmt.Sprint("s", i), a, "DE")
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for name, n := range map[string]int{
		"ipFail": g.ipFail.len(), "netFail": g.netFail.len(), "loginFail": g.loginFail.len(),
		"pairFail": g.pairFail.len(), "exempt": g.exempt.len(), "known": g.known.len(), "countries": g.countries.len(),
	} {
		if n > 100 {
			t.Errorf("table %s holds %d keys, want at most max_tracked 100", name, n)
		}
	}
}

func TestBanTableEvictionKeepsLookupsRight(t *testing.T) {
	g, _ := newTestGuard(t, func(c *Config) { c.MaxTracked = 100 })
	for i := range 300 {
		if _, err := g.AddBan(netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 32), time.Hour, "t"); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(g.Bans()); n != 100 {
		t.Fatalf("%d bans kept, want 100", n)
	}
	if _, err := g.Accept(netip.AddrFrom4([4]byte{10, 0, 1, 43})); !errors.Is(err, ErrBanned) {
		t.Fatalf("newest ban not enforced: %v", err)
	}
	c, err := g.Accept(netip.AddrFrom4([4]byte{10, 0, 0, 0}))
	if err != nil {
		t.Fatalf("evicted ban still enforced: %v", err)
	}
	c.Close()
}

func TestSweep(t *testing.T) {
	g, clk := newTestGuard(t, nil)
	failMany(g, addr1, 10, "s")
	g.success("x@example.org", addr2, "DE")
	clk.Advance(8 * 24 * time.Hour)
	g.Sweep()
	g.mu.Lock()
	defer g.mu.Unlock()
	for name, n := range map[string]int{
		"ipFail": g.ipFail.len(), "netFail": g.netFail.len(), "loginFail": g.loginFail.len(),
		"pairFail": g.pairFail.len(), "bans": g.bans.len(), "offences": g.offences.len(),
		"locks": g.locks.len(), "exempt": g.exempt.len(), "countries": g.countries.len(),
	} {
		if n != 0 {
			t.Errorf("after Sweep table %s holds %d keys, want 0", name, n)
		}
	}
	if len(g.banLens) != 0 {
		t.Errorf("banLens = %v after all bans swept", g.banLens)
	}
	if g.known.len() != 1 {
		t.Errorf("known networks = %d, want 1 (remember_success is 30 days)", g.known.len())
	}
}

func TestConcurrentLogins(t *testing.T) {
	g, clk := newTestGuard(t, func(c *Config) { c.MaxTracked = 500 })
	dir := t.TempDir()
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for i := range 300 {
				a := netip.AddrFrom4([4]byte{10, byte(w), byte(i % 7), byte(i % 3)})
				login := fmt.Sprintf("user%d@example.org", i%5)
				if c, err := g.Accept(a); err == nil {
					if v := g.checkNow(login, a); v.Allow && i%4 == 0 {
						g.success(login, a, []string{"DE", "FR", "US", "RU"}[i%4])
						c.LoggedIn()
					} else {
						g.failure(login, a, fmt.Sprint("pw", i))
					}
					c.Close()
				}
				switch i % 50 {
				case 0:
					g.Sweep()
					g.Bans()
					g.Lockouts()
				case 25:
					if err := g.Save(filepath.Join(dir, fmt.Sprintf("s%d.json", w))); err != nil {
						t.Error(err)
					}
				case 30:
					clk.Advance(time.Minute)
					g.Unlock(login)
				case 40:
					c := Defaults()
					c.MaxTracked = 500
					c.Ban.IPAfter = 5 + w%3
					if err := g.Reload(c); err != nil {
						t.Error(err)
					}
				}
			}
		})
	}
	wg.Wait()
	if s := g.ConnStats(); s != (ConnStats{}) {
		t.Fatalf("connections left open in the counts: %+v", s)
	}
}

func TestWindowKeepsOnlyWhatActionsNeed(t *testing.T) {
	g, _ := newTestGuard(t, func(c *Config) {
		c.Ban.IPAfter, c.Ban.NetworkAfter, c.Exemption.MaxFailures = 0, 0, 0
		c.Lockout.After, c.Lockout.PerIPAfter = 0, 0
	})
	for i := range 500 {
		g.failure("alice@example.org", addr1, fmt.Sprint("pw", i))
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	w, _ := g.ipFail.get(addr1)
	p, _ := g.pairFail.get(pairKey{"alice@example.org", addr1})
	// tarpit: after 3, 1s doubling to 15s: saturated at 3+4 failures.
	if len(w.hits) != 7 || len(p.hits) != 7 {
		t.Fatalf("kept %d address and %d pair failures, want 7 each (tarpit saturation)", len(w.hits), len(p.hits))
	}
}

func TestInvalidAddress(t *testing.T) {
	g, _ := newTestGuard(t, nil)
	var zero netip.Addr
	if _, err := g.Accept(zero); !errors.Is(err, ErrDenied) {
		t.Fatalf("Accept(invalid) = %v, want ErrDenied", err)
	}
	if v := g.checkNow("alice", zero); v.Allow {
		t.Fatalf("Check(invalid) = %+v, want refused", v)
	}
	for i := range 20 {
		if ev := append(g.failure("alice", zero, fmt.Sprint(i)), g.denied("alice", zero, fmt.Sprint(i))...); len(ev) != 0 {
			t.Fatalf("failures without an address raised %v", kinds(ev))
		}
	}
	if ev := g.success("alice", zero, "DE"); len(ev) != 0 || len(g.Bans()) != 0 {
		t.Fatalf("Success(invalid) = %v, bans %v", ev, g.Bans())
	}
}

func TestAdminBanNotOverridden(t *testing.T) {
	g, _ := newTestGuard(t, nil)
	b, err := g.AddBan(netip.MustParsePrefix("192.0.2.1/32"), 48*time.Hour, "admin")
	if err != nil {
		t.Fatal(err)
	}
	if ev := failMany(g, addr1, 10, "x"); len(ev) != 0 {
		t.Fatalf("failures under an admin ban raised %v", kinds(ev))
	}
	if got := g.Bans(); len(got) != 1 || got[0] != b {
		t.Fatalf("admin ban changed to %+v, want %+v", got, b)
	}
}

// A source keeps sending attempts on its open connection after its ban;
// they must not ban it again, one escalation step up, for the same burst.
func TestAttemptsWhileBannedDoNotEscalate(t *testing.T) {
	g, clk := newTestGuard(t, nil)
	ev := failMany(g, addr1, 10, "burst-")
	if e, ok := findEvent(ev, EventBanned, "192.0.2.1/32"); !ok || e.Offence != 1 {
		t.Fatalf("10 failures raised %v, want a first BANNED", kinds(ev))
	}
	for i := range 20 {
		if ev := g.denied("alice@example.org", addr1, fmt.Sprint("late", i)); len(ev) != 0 {
			t.Fatalf("denied attempt %d while banned raised %v, want nothing", i, kinds(ev))
		}
		// The backend saw these guesses: they still count for bob's
		// lockout, just not for the source's ban.
		if ev := g.failure("bob@example.org", addr1, fmt.Sprint("inflight", i)); len(ev) != 0 && (i != 9 || len(ev) != 1 || ev[0].Kind != EventLocked) {
			t.Fatalf("in-flight failure %d while banned raised %v, want nothing (the 10th: LOCKED only)", i, kinds(ev))
		}
	}
	bans := g.Bans()
	if len(bans) != 1 || bans[0].Offence != 1 || bans[0].Until.Sub(clk.Now()) != 15*time.Minute {
		t.Fatalf("bans after attempts while banned: %+v, want the first 15m ban unchanged", bans)
	}
	// A source that comes back after the ban and fails again still
	// escalates.
	clk.Advance(15*time.Minute + time.Second)
	ev = failMany(g, addr1, 10, "again-")
	if e, ok := findEvent(ev, EventBanned, "192.0.2.1/32"); !ok || e.Offence != 2 || e.Duration != time.Hour {
		t.Fatalf("failures after the ban raised %v (%+v), want a second ban of 1h", kinds(ev), e)
	}
}
