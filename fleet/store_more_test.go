package fleet

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/alicebob/miniredis/v2"

	"github.com/mailgate/mailgate/guard"
	"github.com/mailgate/mailgate/internal/testwait"
)

// Network bans count over nodes too, for IPv4 (one network) and IPv6
// (two prefix lengths), and reach every node's accept.
func TestFleetNetworkBans(t *testing.T) {
	m := miniredis.RunT(t)
	c := testConfig(t, m.Addr())
	c.Ban.IPAfter = 0
	c.Ban.NetworkAfter = 3
	a, b := newNode(t, c, nil), newNode(t, c, nil)
	for _, tc := range []struct {
		addrs []string
		other string // another address in the banned network
		want  string
	}{
		{[]string{"198.51.100.1", "198.51.100.2", "198.51.100.3"}, "198.51.100.200", "198.51.100.0/24"},
		{[]string{"2001:db8:1:1::1", "2001:db8:1:2::1", "2001:db8:1:3::1"}, "2001:db8:1:ff::9", "2001:db8:1::/48"},
	} {
		var evs []guard.Event
		for i, ad := range tc.addrs {
			_, e := []*node{a, b, a}[i].try("x"+tc.want, ad, "pw"+ad, guard.WrongPassword)
			evs = append(evs, e...)
		}
		if len(evs) != 1 || evs[0].Prefix.String() != tc.want {
			t.Fatalf("%v: events %+v, want one BANNED of %s", tc.addrs, evs, tc.want)
		}
		for _, n := range []*node{a, b} {
			testwait.For(t, "network ban on every node", func() bool { return banned(n.g, tc.other) })
		}
	}
}

// A success on one node makes the address exempt on all: failures on
// another node do not ban it until exemption.max_failures.
func TestFleetExemptionAndCeiling(t *testing.T) {
	m := miniredis.RunT(t)
	c := testConfig(t, m.Addr()) // ip_after 3, exemption.max_failures 6
	a, b := newNode(t, c, nil), newNode(t, c, nil)
	const src = "203.0.113.50"
	if v, _ := a.try("owner", src, "right", guard.Passed); !v.Allow {
		t.Fatalf("success refused: %+v", v)
	}
	var evs []guard.Event
	for i := range 6 {
		v, e := b.try("user"+string(rune('a'+i)), src, "wrong", guard.WrongPassword)
		if !v.Allow {
			t.Fatalf("failure %d from an exempt address refused before the ceiling: %+v", i+1, v)
		}
		if i < 5 && len(e) > 0 {
			t.Fatalf("failure %d from an exempt address banned it: %+v", i+1, e)
		}
		evs = append(evs, e...)
	}
	if len(evs) != 1 || evs[0].Kind != guard.EventBanned || !strings.Contains(evs[0].Reason, "exemption ceiling") {
		t.Fatalf("events at the ceiling: %+v", evs)
	}
	testwait.For(t, "ceiling ban on node a", func() bool { return banned(a.g, src) })
	if _, err := a.g.Accept(netip.MustParseAddr(src)); err == nil {
		t.Fatal("accepted")
	}
}
