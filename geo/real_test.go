package geo

import (
	"bytes"
	"math/rand/v2"
	"net/netip"
	"os"
	"testing"

	"github.com/ip2location/ip2location-go/v9"
)

// randomGlobal returns n pseudo-random IPv4 and n IPv6 (2000::/3) addresses
// from a fixed seed.
func randomGlobal(n int) []netip.Addr {
	r := rand.New(rand.NewPCG(1, 2))
	out := make([]netip.Addr, 0, 2*n)
	for range n {
		out = append(out, netip.AddrFrom4(be4(r.Uint32())))
		hi := r.Uint64()&^(uint64(7)<<61) | uint64(1)<<61 // 2000::/3
		out = append(out, netip.AddrFrom16(be16(u128{hi: hi, lo: r.Uint64()})))
	}
	return out
}

// TestRealKnownAnswers pins a few answers of the shared data in both files.
func TestRealKnownAnswers(t *testing.T) {
	tests := []struct{ addr, code, name string }{
		{"81.2.69.142", "GB", "United Kingdom"},
		{"8.8.8.8", "US", "United States"},
		{"::ffff:8.8.8.8", "US", "United States"},
		{"2001:4860:4860::8888", "US", "United States"},
		{"193.0.14.129", "NL", "Netherlands"},
		{"192.168.1.1", LabelPrivate, "private network"},
		{"2001:db8::1", LabelDocumentation, "documentation or benchmarking range"},
	}
	for _, file := range []string{realBIN(t), realMMDB(t)} {
		d := mustOpen(t, Config{Databases: []string{file}})
		for _, tc := range tests {
			loc := d.Lookup(netip.MustParseAddr(tc.addr))
			if loc.Code() != tc.code || loc.Name != tc.name {
				t.Errorf("%s: Lookup(%s) = %+v, want %s %q", file, tc.addr, loc, tc.code, tc.name)
			}
		}
	}
}

// TestRealFormatsAgree: the two shared files hold the same data, so every
// lookup must give the same answer from either (6to4 included, since geo
// unwraps it before asking either reader).
func TestRealFormatsAgree(t *testing.T) {
	bin := mustOpen(t, Config{Databases: []string{realBIN(t)}})
	mmdb := mustOpen(t, Config{Databases: []string{realMMDB(t)}})
	addrs := randomGlobal(20000)
	for _, s := range []string{"0.0.0.1", "1.0.0.0", "1.0.0.255", "1.0.1.0", "223.255.255.255", "2002:0808:0808::1", "2c0f:ffff:ffff:ffff:ffff:ffff:ffff:ffff"} {
		addrs = append(addrs, netip.MustParseAddr(s))
	}
	placed := 0
	for _, a := range addrs {
		b, m := bin.Lookup(a), mmdb.Lookup(a)
		if b.Code() != m.Code() || b.Name != m.Name {
			t.Errorf("Lookup(%s): BIN %s %q, MMDB %s %q", a, b.Code(), b.Name, m.Code(), m.Name)
		}
		if b.Country != "" {
			placed++
		}
	}
	if placed < len(addrs)/4 {
		t.Errorf("only %d of %d random addresses placed; the readers look broken", placed, len(addrs))
	}
}

// TestRealBINMatchesLibrary: our in-memory BIN table gives the answer
// ip2location-go gives, for random addresses and for the first and last
// address of rows across the file.
func TestRealBINMatchesLibrary(t *testing.T) {
	raw, err := os.ReadFile(realBIN(t))
	if err != nil {
		t.Fatal(err)
	}
	db, err := openBIN(raw, "real", "real")
	if err != nil {
		t.Fatal(err)
	}
	binLibMu.Lock()
	defer binLibMu.Unlock()
	lib, err := ip2location.OpenDBWithReader(nopCloser{bytes.NewReader(raw)})
	if err != nil {
		t.Fatal(err)
	}
	addrs := randomGlobal(20000)
	addrs = appendSamples4(addrs, db.v4Start[:len(db.v4Start)/7]) // denser at the start
	addrs = appendSamples4(addrs, db.v4Start)
	addrs = appendSamples6(addrs, db.v6Start)
	for _, a := range addrs {
		if ip2locRemaps(a) {
			continue
		}
		rec, err := lib.Get_country_long(a.String())
		if err != nil {
			t.Fatal(err)
		}
		short, _ := lib.Get_country_short(a.String())
		var got Location
		if i, ok := db.row(a); ok {
			got = db.recs[i]
		}
		want := short.Country_short
		if want == "-" {
			want = ""
		}
		if got.Country != want || (want != "" && got.Name != rec.Country_long) {
			t.Errorf("%s: ours %q %q, ip2location-go %q %q", a, got.Country, got.Name, short.Country_short, rec.Country_long)
		}
	}
	if len(db.v4Start) != 341575 || len(db.v6Start) != 275358 {
		t.Errorf("rows: %d IPv4, %d IPv6; the header says 341575 and 275358", len(db.v4Start), len(db.v6Start))
	}
}
