package geo

import (
	"bytes"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// smallDBs writes a synthetic BIN and MMDB with the same data and returns
// their paths. Ranges: 8.8.8.0/24 US, 81.2.69.0/24 GB (DB3: England /
// London), 2001:4860::/32 US, 2a00:1450::/32 IE; everything else unplaced.
func smallDBs(t *testing.T) (bin, mmdb string) {
	t.Helper()
	dir := t.TempDir()
	a := netip.MustParseAddr
	b := writeBIN(binSpec{
		dbType: 3,
		v4: []binRow{
			{from: a("8.8.8.0"), code: "US", name: "United States", region: "California", city: "Mountain View"},
			{from: a("8.8.9.0"), code: "-", name: "-"},
			{from: a("81.2.69.0"), code: "GB", name: "United Kingdom", region: "England", city: "London"},
			{from: a("81.2.70.0"), code: "-", name: "-"},
		},
		v6: []binRow{
			{from: a("2001:4860::"), code: "US", name: "United States"},
			{from: a("2001:4861::"), code: "-", name: "-"},
			{from: a("2a00:1450::"), code: "IE", name: "Ireland"},
			{from: a("2a00:1451::"), code: "-", name: "-"},
		},
		fileSize: true,
	})
	m := writeMMDB(mmdbSpec{nets: []mmdbNet{
		{netip.MustParsePrefix("8.8.8.0/24"), geoip2Rec("US", "United States", "California", "Mountain View")},
		{netip.MustParsePrefix("81.2.69.0/24"), geoip2Rec("GB", "United Kingdom", "England", "London")},
		{netip.MustParsePrefix("2001:4860::/32"), geoip2Rec("US", "United States", "", "")},
		{netip.MustParsePrefix("2a00:1450::/32"), geoip2Rec("IE", "Ireland", "", "")},
	}})
	bin, mmdb = filepath.Join(dir, "small.BIN"), filepath.Join(dir, "small.mmdb")
	writeFile(t, bin, b)
	writeFile(t, mmdb, m)
	return bin, mmdb
}

func writeFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func mustOpen(t testing.TB, c Config) *DB {
	t.Helper()
	log := testLogger(t)
	if _, ok := t.(*testing.B); ok {
		log = nil // keep benchmark output clean
	}
	d, err := Open(c, log)
	if err != nil {
		t.Fatalf("Open(%+v): %v", c, err)
	}
	return d
}

// TestSmallDBEdges checks range edges, IPv6, IPv4-mapped IPv6 and gaps on
// generated files, in both formats, with the same expectations.
func TestSmallDBEdges(t *testing.T) {
	bin, mmdb := smallDBs(t)
	tests := []struct {
		addr, code, region, city string
	}{
		{"8.8.8.0", "US", "California", "Mountain View"},   // first address of a range
		{"8.8.8.255", "US", "California", "Mountain View"}, // last address
		{"8.8.7.255", "unknown", "", ""},                   // just before
		{"8.8.9.0", "unknown", "", ""},                     // just after
		{"81.2.69.142", "GB", "England", "London"},
		{"::ffff:81.2.69.142", "GB", "England", "London"}, // IPv4-mapped IPv6 is IPv4
		{"::ffff:8.8.9.0", "unknown", "", ""},
		{"2001:4860::", "US", "", ""},
		{"2001:4860:ffff:ffff:ffff:ffff:ffff:ffff", "US", "", ""},
		{"2001:4861::", "unknown", "", ""},
		{"2001:485f:ffff:ffff:ffff:ffff:ffff:ffff", "unknown", "", ""},
		{"2a00:1450:4001::1", "IE", "", ""},
		{"2a00:1450:4001::1%eth0", "IE", "", ""},                            // zones are ignored
		{"2002:5102:458e::1", "GB", "England", "London"},                    // 6to4 of 81.2.69.142
		{"2001:0:4136:e378:8000:63bf:aefd:ba71", "GB", "England", "London"}, // Teredo, client 81.2.69.142
		{"64:ff9b::808:808", "US", "California", "Mountain View"},           // NAT64 of 8.8.8.8
		{"1.2.3.4", "unknown", "", ""},
		{"255.255.255.255", "reserved", "", ""},
		{"10.1.2.3", "private", "", ""},
	}
	for _, file := range []string{bin, mmdb} {
		d := mustOpen(t, Config{Databases: []string{file}})
		for _, tc := range tests {
			loc := d.Lookup(netip.MustParseAddr(tc.addr))
			if loc.Code() != tc.code || loc.Region != tc.region || loc.City != tc.city {
				t.Errorf("%s: Lookup(%s) = %+v, want %s/%s/%s", filepath.Base(file), tc.addr, loc, tc.code, tc.region, tc.city)
			}
			if loc.Country != "" && (loc.Name != CountryName(loc.Country) || loc.Source != filepath.Base(file)) {
				t.Errorf("%s: Lookup(%s) = %+v: wrong name or source", filepath.Base(file), tc.addr, loc)
			}
		}
	}
}

// TestEmbeddedDefault: no configuration still answers, from the embedded
// database, and says so.
func TestEmbeddedDefault(t *testing.T) {
	d := mustOpen(t, Config{})
	loc := d.Lookup(netip.MustParseAddr("81.2.69.142"))
	if loc.Country != "GB" || loc.Name != "United Kingdom" || loc.Source != EmbeddedName {
		t.Errorf("Lookup(81.2.69.142) = %+v, want GB United Kingdom from embedded", loc)
	}
	in := d.Info()
	if len(in) != 1 || in[0].Name != EmbeddedName || in[0].Format != FormatMMDB || !in[0].IPv6 ||
		builtDate(in[0].Built) != "2026-06-17" {
		t.Errorf("Info() = %+v", in)
	}
	if got := d.IPv4Only(); len(got) != 0 {
		t.Errorf("IPv4Only() = %v, want none", got)
	}
}

// TestReservedBeforeDatabase: the bundled data places private and
// documentation ranges in AU and JP; geo must label them itself.
func TestReservedBeforeDatabase(t *testing.T) {
	d := mustOpen(t, Config{})
	tests := []struct{ addr, label string }{
		{"0.0.0.0", LabelUnspecified}, {"0.1.2.3", LabelReserved},
		{"10.0.0.1", LabelPrivate}, {"172.16.0.1", LabelPrivate}, {"172.31.255.255", LabelPrivate},
		{"192.168.1.1", LabelPrivate}, {"100.64.0.1", LabelCGNAT}, {"100.127.255.255", LabelCGNAT},
		{"127.0.0.1", LabelLoopback}, {"127.255.255.254", LabelLoopback}, {"169.254.1.1", LabelLinkLocal},
		{"192.0.0.8", LabelReserved}, {"192.0.2.1", LabelDocumentation}, {"198.51.100.7", LabelDocumentation},
		{"203.0.113.9", LabelDocumentation}, {"198.18.0.1", LabelDocumentation}, {"192.88.99.1", LabelReserved},
		{"224.0.0.1", LabelMulticast}, {"239.255.255.255", LabelMulticast}, {"240.0.0.1", LabelReserved},
		{"255.255.255.255", LabelReserved},
		{"::", LabelUnspecified}, {"::1", LabelLoopback}, {"::ffff:127.0.0.1", LabelLoopback},
		{"::ffff:10.0.0.1", LabelPrivate}, {"fc00::1", LabelPrivate}, {"fd12:3456::1", LabelPrivate},
		{"fe80::1", LabelLinkLocal}, {"fe80::1%lo", LabelLinkLocal}, {"ff02::1", LabelMulticast},
		{"2001:db8::1", LabelDocumentation}, {"3fff::1", LabelDocumentation}, {"2001:2::1", LabelReserved},
		{"2001:10::1", LabelReserved}, {"100::1", LabelReserved}, {"::2", LabelReserved},
		{"4000::1", LabelReserved}, {"64:ff9b:1::1", LabelPrivate},
		{"2002:c0a8:101::1", LabelPrivate}, // 6to4 of 192.168.1.1
		{"64:ff9b::7f00:1", LabelLoopback}, // NAT64 of 127.0.0.1
	}
	for _, tc := range tests {
		loc := d.Lookup(netip.MustParseAddr(tc.addr))
		if loc.Label != tc.label || loc.Country != "" || loc.Source != "reserved" || loc.Name == "" {
			t.Errorf("Lookup(%s) = %+v, want label %q", tc.addr, loc, tc.label)
		}
	}
	// The zero Addr is not an error either.
	if loc := d.Lookup(netip.Addr{}); loc.Label != LabelUnknown {
		t.Errorf("Lookup(zero Addr) = %+v, want unknown", loc)
	}
}

// TestOverrides: overrides beat reserved ranges and databases, longest
// prefix first; labels and lower-case codes work.
func TestOverrides(t *testing.T) {
	d := mustOpen(t, Config{Overrides: map[string]string{
		"127.0.0.2":           "RU",
		"127.0.0.0/24":        "lab",
		"81.2.69.0/24":        "de",
		"81.2.69.128/25":      "office-vpn",
		"2001:db8::/32":       "JP",
		"::ffff:10.9.0.0/112": "FR", // an IPv4-mapped prefix is an IPv4 prefix
	}})
	tests := []struct{ addr, code, source string }{
		{"127.0.0.2", "RU", "override"},
		{"::ffff:127.0.0.2", "RU", "override"},
		{"127.0.0.3", "lab", "override"},
		{"127.0.1.1", LabelLoopback, "reserved"},
		{"81.2.69.1", "DE", "override"},
		{"81.2.69.142", "office-vpn", "override"},
		{"2001:db8::5", "JP", "override"},
		{"10.9.1.1", "FR", "override"},
		{"8.8.8.8", "US", EmbeddedName},
	}
	for _, tc := range tests {
		loc := d.Lookup(netip.MustParseAddr(tc.addr))
		if loc.Code() != tc.code || loc.Source != tc.source {
			t.Errorf("Lookup(%s) = %+v, want %s from %s", tc.addr, loc, tc.code, tc.source)
		}
	}
	if loc := d.Lookup(netip.MustParseAddr("127.0.0.2")); loc.Name != "Russian Federation" && loc.Name != "Russia" {
		t.Errorf("override RU has name %q", loc.Name)
	}
}

func TestValidate(t *testing.T) {
	good := Config{
		Databases: []string{"a.mmdb", "embedded"},
		Overrides: map[string]string{"10.0.0.0/8": "office", "192.0.2.1": "RU", "2001:db8::/32": "gb"},
	}
	if err := good.Validate(); err != nil {
		t.Errorf("Validate(%+v) = %v, want nil", good, err)
	}
	bad := Config{
		Databases: []string{"a.mmdb", "", "./a.mmdb"},
		Overrides: map[string]string{
			"10.0.0.0/33": "RU", "10.0.0.1/8": "RU", "nonsense": "RU", "192.0.2.0/24": "UK",
			"198.51.100.0/24": "Lab Net", "203.0.113.0/24": "", "fe80::1%eth0": "lab",
		},
	}
	err := bad.Validate()
	if err == nil {
		t.Fatal("Validate accepted a bad config")
	}
	for _, want := range []string{
		"geo.databases[1]: empty path", "geo.databases[2]:",
		"geo.overrides[10.0.0.0/33]:", "geo.overrides[10.0.0.1/8]: \"10.0.0.1/8\" has host bits set; did you mean 10.0.0.0/8?",
		"geo.overrides[nonsense]:", "geo.overrides[192.0.2.0/24]:", "the United Kingdom is GB",
		"geo.overrides[198.51.100.0/24]:", "geo.overrides[203.0.113.0/24]:", "geo.overrides[fe80::1%eth0]:",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate error lacks %q:\n%v", want, err)
		}
	}
	if _, err := Open(bad, nil); err == nil {
		t.Error("Open accepted an invalid config")
	}
}

// TestChainOrder: the first database that places an address answers; the
// next one fills the gaps (here: the IPv4-only BIN places no IPv6 address).
func TestChainOrder(t *testing.T) {
	dir := t.TempDir()
	v4only := filepath.Join(dir, "v4.BIN")
	writeFile(t, v4only, writeBIN(binSpec{
		v4:     []binRow{{from: netip.MustParseAddr("8.8.8.0"), code: "CH", name: "Switzerland"}, {from: netip.MustParseAddr("8.8.9.0"), code: "-", name: "-"}},
		noIPv6: true,
	}))
	d := mustOpen(t, Config{Databases: []string{v4only, EmbeddedName}})
	if got := d.Lookup(netip.MustParseAddr("8.8.8.8")); got.Country != "CH" || got.Source != "v4.BIN" {
		t.Errorf("8.8.8.8 = %+v, want CH from the first database", got)
	}
	if got := d.Lookup(netip.MustParseAddr("1.1.1.1")); got.Country == "" || got.Source != EmbeddedName {
		t.Errorf("1.1.1.1 = %+v, want a country from the embedded database", got)
	}
	if got := d.Lookup(netip.MustParseAddr("2001:4860:4860::8888")); got.Country != "US" || got.Source != EmbeddedName {
		t.Errorf("2001:4860:4860::8888 = %+v, want US from the embedded database", got)
	}
	if got := d.IPv4Only(); len(got) != 1 || got[0] != v4only {
		t.Errorf("IPv4Only() = %v, want [%s]", got, v4only)
	}
	// Alone, the IPv4-only file leaves IPv6 clients unknown: never a
	// wrong country.
	d4 := mustOpen(t, Config{Databases: []string{v4only}})
	if got := d4.Lookup(netip.MustParseAddr("2001:4860:4860::8888")); got.Label != LabelUnknown {
		t.Errorf("IPv6 in an IPv4-only BIN = %+v, want unknown", got)
	}
}

// TestBadFiles: every kind of broken file is a clear error naming the
// file, never a panic.
func TestBadFiles(t *testing.T) {
	bin, mmdb := smallDBs(t)
	binBytes, _ := os.ReadFile(bin)
	mmdbBytes, _ := os.ReadFile(mmdb)
	hdr27 := append([]byte(nil), binBytes...)
	hdr27[0] = 27 // ip2location-go indexes a [27] array with this and panics
	badOrder := append([]byte(nil), binBytes...)
	copy(badOrder[64+16:], []byte{0xff, 0xff, 0xff, 0xf0}) // row 1 (DB3 rows are 16 bytes) after row 2
	badPtr := append([]byte(nil), binBytes...)
	copy(badPtr[64+16+4:], []byte{0xff, 0xff, 0xff, 0x7f}) // row 1 country pointer beyond the file
	noMarker := append([]byte(nil), mmdbBytes...)
	noMarker[len(noMarker)-200] ^= 0xff // probably inside metadata
	tests := []struct {
		name    string
		content []byte
		want    error
		text    string
	}{
		{"empty", nil, ErrEmpty, "empty"},
		{"gzip", []byte("\x1f\x8b\x08\x00junk"), ErrCompressed, "gzip"},
		{"zip", []byte("PK\x03\x04junkjunk"), ErrCompressed, "zip"},
		{"text", []byte(strings.Repeat("hello, world\n", 20)), ErrFormat, "nor an IP2Location BIN"},
		{"short", []byte("abc"), ErrFormat, "too short"},
		{"bin header only", binBytes[:64], ErrCorrupt, "truncated"},
		{"bin truncated", binBytes[:len(binBytes)-5], ErrCorrupt, "truncated"},
		{"bin type 27", hdr27, ErrFormat, "type 27"},
		{"bin rows out of order", badOrder, ErrCorrupt, "row 1"},
		{"bin bad pointer", badPtr, ErrCorrupt, "beyond the end"},
		{"mmdb truncated", mmdbBytes[:len(mmdbBytes)/2], ErrFormat, "a truncated .mmdb"},
		{"mmdb metadata only", mmdbBytes[len(mmdbBytes)-300:], ErrCorrupt, ""},
	}
	dir := t.TempDir()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_"))
			writeFile(t, path, tc.content)
			_, err := Open(Config{Databases: []string{path}}, testLogger(t))
			if err == nil {
				t.Fatalf("Open(%s) succeeded", tc.name)
			}
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.text) {
				t.Errorf("Open(%s) = %v, want %v naming %s and saying %q", tc.name, err, tc.want, path, tc.text)
			}
		})
	}
	// Missing files and directories name the file and the reason (FIFOs:
	// TestFIFODatabase).
	for _, p := range []string{filepath.Join(dir, "missing.mmdb"), dir} {
		_, err := Open(Config{Databases: []string{p}}, nil)
		if err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("Open(%s) = %v, want an error naming it", p, err)
		}
	}
	_, err := Open(Config{Databases: []string{filepath.Join(dir, "missing.mmdb")}}, nil)
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v, want os.ErrNotExist", err)
	}
}

// TestProbeRejectsUseless: a well-formed database that places none of the
// probe addresses (an ASN database, say) is refused at open.
func TestProbeRejectsUseless(t *testing.T) {
	path := filepath.Join(t.TempDir(), "asn.mmdb")
	writeFile(t, path, writeMMDB(mmdbSpec{nets: []mmdbNet{
		{netip.MustParsePrefix("8.8.8.0/24"), map[string]any{"autonomous_system_number": uint32(15169)}},
	}}))
	_, err := Open(Config{Databases: []string{path}}, nil)
	if !errors.Is(err, ErrProbe) {
		t.Errorf("Open(ASN-only db) = %v, want ErrProbe", err)
	}
}

// TestMMDBSchemas: ip-location-db records (country_code only) get names
// from the built-in table; a GeoIP2 record without "country" falls back to
// registered_country; an IPv4-only MMDB places no IPv6.
func TestMMDBSchemas(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "v4.mmdb")
	writeFile(t, path, writeMMDB(mmdbSpec{ipVersion: 4, nets: []mmdbNet{
		{netip.MustParsePrefix("8.8.8.0/24"), ipLocRec("us")},
		{netip.MustParsePrefix("9.9.9.0/24"), map[string]any{"registered_country": map[string]any{"iso_code": "CH", "names": map[string]any{"en": "Switzerland"}}}},
		{netip.MustParsePrefix("1.1.1.0/24"), map[string]any{"country_code": "-", "city": "Nowhere"}},
		{netip.MustParsePrefix("1.0.0.0/24"), map[string]any{"country_code": "AU", "state1": "Queensland", "city": "Brisbane"}},
	}}))
	d := mustOpen(t, Config{Databases: []string{path}})
	tests := []struct{ addr, code, name, region, city string }{
		{"8.8.8.8", "US", "United States", "", ""},
		{"9.9.9.9", "CH", "Switzerland", "", ""},
		{"1.1.1.1", "unknown", "not in any database", "", ""},
		{"1.0.0.1", "AU", "Australia", "Queensland", "Brisbane"},
		{"2001:4860::1", "unknown", "not in any database", "", ""},
	}
	for _, tc := range tests {
		loc := d.Lookup(netip.MustParseAddr(tc.addr))
		if loc.Code() != tc.code || loc.Name != tc.name || loc.Region != tc.region || loc.City != tc.city {
			t.Errorf("Lookup(%s) = %+v, want %s %q %q %q", tc.addr, loc, tc.code, tc.name, tc.region, tc.city)
		}
	}
	if got := d.IPv4Only(); len(got) != 1 {
		t.Errorf("IPv4Only() = %v, want the file", got)
	}
}

func TestDBInfoString(t *testing.T) {
	d := mustOpen(t, Config{})
	if got, want := d.Info()[0].String(), "embedded (mmdb country ipvAll, built 2026-06-17, IPv4+IPv6)"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	bin, _ := smallDBs(t)
	d = mustOpen(t, Config{Databases: []string{bin}})
	if got, want := d.Info()[0].String(), bin+" (ip2location DB3, built 2026-06-17, IPv4+IPv6, 12 rows)"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

// TestStaleWarning: a database built long ago is logged as stale.
func TestStaleWarning(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.mmdb")
	writeFile(t, path, writeMMDB(mmdbSpec{built: time.Now().Add(-400 * 24 * time.Hour), nets: []mmdbNet{
		{netip.MustParsePrefix("8.8.8.0/24"), ipLocRec("US")},
	}}))
	fresh := filepath.Join(t.TempDir(), "fresh.mmdb")
	writeFile(t, fresh, writeMMDB(mmdbSpec{built: time.Now().Add(-24 * time.Hour), nets: []mmdbNet{
		{netip.MustParsePrefix("8.8.8.0/24"), ipLocRec("US")},
	}}))
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	if _, err := Open(Config{Databases: []string{path, fresh}}, log); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if !strings.Contains(out, `level=WARN msg="geo database is stale`) || !strings.Contains(out, "file="+path) ||
		strings.Count(out, "level=WARN") != 1 {
		t.Errorf("log:\n%s\nwant one stale warning, for %s", out, path)
	}
}
