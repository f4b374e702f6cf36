package geo

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// fuzzSeeds are small valid files of both formats; the checked-in corpus
// under testdata/fuzz holds them and broken variants (written by
// TestWriteFuzzCorpus with -update).
func fuzzSeeds() map[string][]byte {
	a := netip.MustParseAddr
	bin1 := writeBIN(binSpec{
		v4:       []binRow{{from: a("8.8.8.0"), code: "US", name: "United States"}, {from: a("8.8.9.0"), code: "-", name: "-"}},
		v6:       []binRow{{from: a("2001:4860::"), code: "US", name: "United States"}, {from: a("2001:4861::"), code: "-", name: "-"}},
		fileSize: true,
	})
	bin3 := writeBIN(binSpec{dbType: 3, noIPv6: true,
		v4: []binRow{{from: a("8.8.8.0"), code: "GB", name: "United Kingdom", region: "England", city: "London"}},
	})
	mm := writeMMDB(mmdbSpec{nets: []mmdbNet{
		{netip.MustParsePrefix("8.8.8.0/24"), geoip2Rec("US", "United States", "California", "Mountain View")},
		{netip.MustParsePrefix("2001:4860::/32"), ipLocRec("US")},
	}})
	mm4 := writeMMDB(mmdbSpec{ipVersion: 4, nets: []mmdbNet{{netip.MustParsePrefix("8.8.0.0/16"), ipLocRec("DE")}}})
	hdr27 := append([]byte(nil), bin1...)
	hdr27[0] = 27
	return map[string][]byte{
		"bin-db1":        bin1,
		"bin-db3-v4only": bin3,
		"bin-type27":     hdr27,
		"bin-truncated":  bin1[:len(bin1)-7],
		"mmdb-v6":        mm,
		"mmdb-v4":        mm4,
		"mmdb-truncated": mm[:len(mm)/2],
		"empty":          {},
		"gzip":           []byte("\x1f\x8b\x08\x00\x00\x00"),
	}
}

// TestWriteFuzzCorpus writes the seed corpus (go test -run
// TestWriteFuzzCorpus -update); without -update it checks the corpus is there.
func TestWriteFuzzCorpus(t *testing.T) {
	for _, target := range []string{"FuzzOpenBytes", "FuzzParseBINHeader"} {
		dir := filepath.Join("testdata", "fuzz", target)
		for name, b := range fuzzSeeds() {
			path := filepath.Join(dir, name)
			if !*update {
				if _, err := os.Stat(path); err != nil {
					t.Errorf("missing seed %s (run with -update)", path)
				}
				continue
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			content := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\n", strconv.Quote(string(b)))
			if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// fuzzAddrs are looked up in every database the fuzzer manages to open.
var fuzzAddrs = []netip.Addr{
	netip.MustParseAddr("8.8.8.8"), netip.MustParseAddr("0.0.0.1"), netip.MustParseAddr("255.255.255.254"),
	netip.MustParseAddr("2001:4860::1"), netip.MustParseAddr("2c0f:ffff::1"), netip.MustParseAddr("ffff::1"),
}

// FuzzOpenBytes feeds arbitrary bytes to the whole open path (format
// detection, header checks, our BIN parser, ip2location-go's cross-check,
// maxminddb) and looks up in whatever opens: no panic, and every answer
// is either "not placed" or an upper-case two-letter code with a source.
func FuzzOpenBytes(f *testing.F) {
	for _, b := range fuzzSeeds() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		db, err := openBytes(b, "fuzz", "fuzz", nil)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error text")
			}
			return
		}
		for _, a := range fuzzAddrs {
			loc, ok := db.lookup(a)
			if ok && (!isAlpha2(loc.Country) || upper2(loc.Country) != loc.Country || loc.Source != "fuzz") {
				t.Fatalf("lookup(%s) = %+v", a, loc)
			}
		}
	})
}

// FuzzParseBINHeader checks the header parser's promise: whatever it
// accepts has its type, columns and every section and index inside the
// file, so nothing downstream can read out of bounds.
func FuzzParseBINHeader(f *testing.F) {
	for _, b := range fuzzSeeds() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parseBINHeader(b)
		if err != nil {
			return
		}
		n := uint64(len(b))
		if h.dbType < 1 || h.dbType > binMaxType || h.columns < minColumns(h.dbType) || h.columns > binMaxColumns {
			t.Fatalf("accepted type %d with %d columns", h.dbType, h.columns)
		}
		if uint64(h.v4Addr-1)+uint64(h.v4Count)*h.v4RowSize() > n {
			t.Fatalf("accepted IPv4 rows past the end")
		}
		if h.v6Count > 0 && uint64(h.v6Addr-1)+uint64(h.v6Count)*h.v6RowSize() > n {
			t.Fatalf("accepted IPv6 rows past the end")
		}
	})
}

// FuzzLookup: any 16 bytes (with or without a zone) get an answer with a
// non-empty Code, from a known class, never a panic.
func FuzzLookup(f *testing.F) {
	d, err := Open(Config{Overrides: map[string]string{"127.0.0.2": "RU", "2001:db8::/48": "lab"}}, nil)
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{"8.8.8.8", "::ffff:127.0.0.2", "2002:7f00:2::", "2001:0:1:2:3:4:80ff:fffd", "fe80::1", "::"} {
		f.Add(netip.MustParseAddr(s).AsSlice(), false)
	}
	f.Fuzz(func(t *testing.T, b []byte, zone bool) {
		a, ok := netip.AddrFromSlice(b)
		if !ok {
			a = netip.Addr{}
		} else if zone && a.Is6() {
			a = a.WithZone("eth0")
		}
		loc := d.Lookup(a)
		switch {
		case loc.Country != "":
			if !isAlpha2(loc.Country) || loc.Label != "" || loc.Name == "" {
				t.Fatalf("Lookup(%v) = %+v", a, loc)
			}
		case loc.Label == "" || loc.Name == "":
			t.Fatalf("Lookup(%v) = %+v: neither country nor label", a, loc)
		}
	})
}

// FuzzPatchedDB overwrites bytes of valid small files of both formats (and
// optionally cuts them short): raw random bytes rarely pass the format
// checks, patches of real files reach the row, pointer, index and record
// code, the library cross-check, and maxminddb's decoder.
func FuzzPatchedDB(f *testing.F) {
	seeds := fuzzSeeds()
	files := [][]byte{seeds["bin-db1"], seeds["bin-db3-v4only"], seeds["mmdb-v6"], seeds["mmdb-v4"]}
	f.Add(uint8(0), uint32(0), []byte{27}, uint32(0))
	f.Add(uint8(0), uint32(69), []byte{0xff, 0xff}, uint32(0))
	f.Add(uint8(1), uint32(80), []byte{0, 0, 0, 0}, uint32(10))
	f.Add(uint8(2), uint32(3), []byte{0x7f}, uint32(0))
	f.Add(uint8(3), uint32(40), []byte("\xe0\x01"), uint32(0))
	f.Fuzz(func(t *testing.T, which uint8, off uint32, patch []byte, cut uint32) {
		b := append([]byte(nil), files[int(which)%len(files)]...)
		if len(patch) > 0 {
			copy(b[int(off%uint32(len(b))):], patch)
		}
		if cut > 0 {
			b = b[:len(b)-int(cut%uint32(len(b)))]
		}
		db, err := openBytes(b, "fuzz", "fuzz", nil)
		if err != nil {
			return
		}
		for _, a := range fuzzAddrs {
			loc, ok := db.lookup(a)
			if ok && (!isAlpha2(loc.Country) || upper2(loc.Country) != loc.Country) {
				t.Fatalf("lookup(%s) = %+v", a, loc)
			}
		}
	})
}
