package console

import (
	"fmt"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/guard"
)

// FuzzParseBanView: any query of the bans page either has its bad list
// refused (shown unfiltered from its first page) or gives views whose
// filters are printable, lower case and bounded and whose pages are in
// range; the view's own links read back as the same view, and a page of
// either list never holds more than banPerPage rows.
func FuzzParseBanView(f *testing.F) {
	f.Add("bq=spray&bp=2&lq=BOB&lp=1")
	f.Add("")
	f.Fuzz(func(t *testing.T, query string) {
		q, err := url.ParseQuery(query)
		if err != nil {
			return
		}
		bv, bad := parseBanView(q)
		for _, v := range []listView{bv.bans, bv.locks} {
			if !printable(v.q, maxLiveQ) || v.q != strings.ToLower(v.q) || v.page < 0 || v.page > maxLivePage {
				t.Fatalf("parseBanView(%q) = %+v (%q)", query, bv, bad)
			}
		}
		for _, anchor := range []string{"", "locks"} {
			u, err := url.Parse(bv.url(anchor))
			if err != nil {
				t.Fatalf("view %+v: link %q: %v", bv, bv.url(anchor), err)
			}
			if again, bad := parseBanView(u.Query()); again != bv || bad != "" {
				t.Fatalf("view %+v: link %q reads as %+v (%q)", bv, u, again, bad)
			}
		}
		var bans []guard.Ban
		var locks []guard.Lockout
		for i := range 2*banPerPage + 3 {
			bans = append(bans, guard.Ban{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), 32), Until: time.Unix(int64(i%3), 0), Reason: "r"})
			locks = append(locks, guard.Lockout{Login: fmt.Sprintf("u%d@b.test", i), Reason: "failures"})
		}
		var d bansData
		d.fill(bv, bans, locks)
		for _, l := range []struct {
			rows int
			lp   listPage
		}{{len(d.Bans), d.BanList}, {len(d.Lockouts), d.LockList}} {
			if l.rows > banPerPage || l.lp.Total > l.lp.All || l.lp.All != 2*banPerPage+3 || (l.rows > 0) != (l.lp.First > 0) {
				t.Fatalf("view %+v: %d rows, %+v", bv, l.rows, l.lp)
			}
		}
	})
}
