package fleet

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/guard"
)

func TestWakeMessageRoundTrip(t *testing.T) {
	s := &Store{node: "n1"}
	q := &guard.SharedAttempt{Login: "a|b,c d", Addr: netip.MustParseAddr("2001:db8::1"),
		Nets: []netip.Prefix{netip.MustParsePrefix("2001:db8::/48"), netip.MustParsePrefix("2001:db8::/64")}}
	node, addr, nets, login, ok := parseWake(s.wakeMessage(q))
	if !ok || node != "n1" || addr != q.Addr || login != q.Login || len(nets) != 2 || nets[1] != q.Nets[1] {
		t.Fatalf("parseWake(wakeMessage) = %q %v %v %q %v", node, addr, nets, login, ok)
	}
	for _, bad := range []string{"", "n|1.2.3.4|", "|1.2.3.4||u", "n|x|1.2.3.0/24|u", "n|1.2.3.4|1.2.3.0/99|u",
		"n|1.2.3.4|" + strings.Repeat("1.2.3.0/24,", 9) + "1.2.3.0/24|u"} {
		if _, _, _, _, ok := parseWake(bad); ok {
			t.Errorf("parseWake(%q) accepted", bad)
		}
	}
}

func FuzzParseWake(f *testing.F) {
	f.Add("0123abcd|198.51.100.7|198.51.100.0/24|alice")
	f.Add("n|2001:db8::1|2001:db8::/48,2001:db8::/64|a|b")
	f.Add("n|1.2.3.4||u")
	f.Fuzz(func(t *testing.T, msg string) {
		node, addr, nets, login, ok := parseWake(msg)
		if !ok {
			return
		}
		if node == "" || login == "" || !addr.IsValid() || len(nets) > 8 {
			t.Fatalf("parseWake(%q) = %q %v %v %q", msg, node, addr, nets, login)
		}
	})
}
