package geo

import (
	"bytes"
	"net/netip"
	"os"
	"testing"

	"github.com/ip2location/ip2location-go/v9"
	"github.com/oschwald/maxminddb-golang/v2"
)

// benchAddrs is a fixed mix of random public IPv4 and IPv6 addresses.
var benchAddrs = randomGlobal(4096)

func benchLookup(b *testing.B, d *DB) {
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		_ = d.Lookup(benchAddrs[i&4095])
		i++
	}
}

// BenchmarkLookupBIN is the decision path (normalize, overrides, reserved
// ranges, database) on the real BIN.
func BenchmarkLookupBIN(b *testing.B) {
	benchLookup(b, mustOpen(b, Config{Databases: []string{realBIN(b)}}))
}

// BenchmarkLookupMMDB is the decision path on the real MMDB file.
func BenchmarkLookupMMDB(b *testing.B) {
	benchLookup(b, mustOpen(b, Config{Databases: []string{realMMDB(b)}}))
}

// BenchmarkLookupEmbedded is the decision path with no configuration.
func BenchmarkLookupEmbedded(b *testing.B) {
	benchLookup(b, mustOpen(b, Config{}))
}

// BenchmarkLookupOverrides adds 64 override prefixes to the path.
func BenchmarkLookupOverrides(b *testing.B) {
	ov := map[string]string{}
	for i := range 64 {
		ov[netip.PrefixFrom(netip.AddrFrom4([4]byte{127, 1, byte(i), 0}), 24).String()] = "lab"
	}
	benchLookup(b, mustOpen(b, Config{Overrides: ov}))
}

// BenchmarkLibraryIP2LocationMemory is ip2location-go itself on the same
// BIN in memory, for comparison (not used on the login path).
func BenchmarkLibraryIP2LocationMemory(b *testing.B) {
	raw, err := os.ReadFile(realBIN(b))
	if err != nil {
		b.Fatal(err)
	}
	binLibMu.Lock()
	defer binLibMu.Unlock()
	lib, err := ip2location.OpenDBWithReader(nopCloser{bytes.NewReader(raw)})
	if err != nil {
		b.Fatal(err)
	}
	strs := make([]string, len(benchAddrs))
	for i, a := range benchAddrs {
		strs[i] = a.String()
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		_, _ = lib.Get_country_short(strs[i&4095])
		i++
	}
}

// BenchmarkLibraryIP2LocationFile is ip2location-go reading the file per
// lookup, as the original PHP setup did.
func BenchmarkLibraryIP2LocationFile(b *testing.B) {
	binLibMu.Lock()
	defer binLibMu.Unlock()
	lib, err := ip2location.OpenDB(realBIN(b))
	if err != nil {
		b.Fatal(err)
	}
	defer lib.Close()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		_, _ = lib.Get_country_short(benchAddrs[i&4095].String())
		i++
	}
}

// BenchmarkLibraryMaxMindDecode is maxminddb decoding the record per
// lookup, for comparison with our offset cache.
func BenchmarkLibraryMaxMindDecode(b *testing.B) {
	r, err := maxminddb.Open(realMMDB(b))
	if err != nil {
		b.Fatal(err)
	}
	var rec struct {
		Code string `maxminddb:"country_code"`
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		_ = r.Lookup(benchAddrs[i&4095]).Decode(&rec)
		i++
	}
}

// BenchmarkLookupParallel measures the decision path from all cores at
// once (the MMDB record cache takes a read lock).
func BenchmarkLookupParallel(b *testing.B) {
	for _, c := range []struct {
		name string
		file func(testing.TB) string
	}{{"BIN", realBIN}, {"MMDB", realMMDB}} {
		b.Run(c.name, func(b *testing.B) {
			d := mustOpen(b, Config{Databases: []string{c.file(b)}})
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					_ = d.Lookup(benchAddrs[i&4095])
					i++
				}
			})
		})
	}
}

// BenchmarkOpen measures opening and checking a real file (what a reload
// costs in the background).
func BenchmarkOpen(b *testing.B) {
	for _, c := range []struct {
		name string
		file func(testing.TB) string
	}{{"BIN", realBIN}, {"MMDB", realMMDB}} {
		b.Run(c.name, func(b *testing.B) {
			cfg := Config{Databases: []string{c.file(b)}}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Open(cfg, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
