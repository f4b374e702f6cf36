package fleet

import (
	"net/netip"
	"testing"
)

// FuzzParseStored feeds the readers of values the store hands back (a
// ban from the index or the feed, a lockout): whatever is in the store,
// they never panic, and a ban they accept writes back to the same value.
func FuzzParseStored(f *testing.F) {
	f.Add("1765000000000|1764999000000|0|1|10 distinct failures in 15m0s")
	f.Add("1765000000000|1764999000000|1|0|admin: abuse|with|bars")
	f.Add("0|1764999000000|1|logins from 4 countries within 24h0m0s")
	f.Add("|||")
	f.Add("99999999999999999999|1|0|1|x")
	f.Fuzz(func(t *testing.T, v string) {
		p := netip.MustParsePrefix("192.0.2.0/24")
		if b, ok := parseBan(p, v); ok {
			again, ok := parseBan(p, banValue(b))
			if !ok || again.Until != b.Until || again.Reason != b.Reason || again.Manual != b.Manual || again.Offence != b.Offence {
				t.Fatalf("%q: %+v does not survive a round trip: %+v", v, b, again)
			}
		}
		parseLock("login", v)
	})
}
