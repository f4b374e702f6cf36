package geo

// Known traps of the two reader libraries, each shown to exist (so a
// library upgrade that changes them is noticed) and shown not to reach
// mailgate's answers.

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/ip2location/ip2location-go/v9"
	"github.com/oschwald/maxminddb-golang/v2"
)

// libOpen opens b with ip2location-go under binLibMu, recovering panics.
func libQuery(t *testing.T, b []byte, addr string) (rec ip2location.IP2Locationrecord, openErr error, panicked bool) {
	t.Helper()
	binLibMu.Lock()
	defer binLibMu.Unlock()
	defer func() {
		if r := recover(); r != nil {
			panicked = true
		}
	}()
	lib, err := ip2location.OpenDBWithReader(nopCloser{bytes.NewReader(b)})
	if err != nil {
		return rec, err, false
	}
	rec, _ = lib.Get_country_short(addr)
	return rec, nil, false
}

// TestTrapIP2LocationErrorText: the library reports an invalid address as
// text in the country field, with no Go error. geo never hands it a
// string from the login path; an invalid netip.Addr gets a label.
func TestTrapIP2LocationErrorText(t *testing.T) {
	bin, _ := smallDBs(t)
	b, _ := os.ReadFile(bin)
	rec, err, _ := libQuery(t, b, "not-an-ip")
	if err != nil || rec.Country_short != "Invalid IP address." {
		t.Logf("library behaviour changed: %q, %v", rec.Country_short, err)
	}
	d := mustOpen(t, Config{Databases: []string{bin}})
	if loc := d.Lookup(netip.Addr{}); loc.Country != "" || loc.Label != LabelUnknown {
		t.Errorf("Lookup(invalid) = %+v, want the unknown label", loc)
	}
}

// TestTrapIP2LocationTruncated: on a truncated file the library opens and
// answers "" (or error text) instead of failing; geo refuses the file.
func TestTrapIP2LocationTruncated(t *testing.T) {
	raw, err := os.ReadFile(realBIN(t))
	if err != nil {
		t.Fatal(err)
	}
	cut := raw[:len(raw)/2]
	rec, openErr, panicked := libQuery(t, cut, "2001:4860:4860::8888")
	if openErr == nil && !panicked && rec.Country_short == "US" {
		t.Logf("library behaviour changed: it answers US from half a file")
	}
	path := filepath.Join(t.TempDir(), "cut.BIN")
	writeFile(t, path, cut)
	_, err = Open(Config{Databases: []string{path}}, nil)
	if !errors.Is(err, ErrCorrupt) {
		t.Errorf("Open(truncated BIN) = %v, want ErrCorrupt", err)
	}
}

// TestTrapIP2LocationPanicHeader: a header type byte of 27 or more makes
// the library index past its position tables and panic; geo rejects the
// header before the library sees it.
func TestTrapIP2LocationPanicHeader(t *testing.T) {
	bin, _ := smallDBs(t)
	b, _ := os.ReadFile(bin)
	b[0] = 200
	if _, _, panicked := libQuery(t, b, "8.8.8.8"); !panicked {
		t.Logf("library behaviour changed: type 200 no longer panics")
	}
	path := filepath.Join(t.TempDir(), "t200.BIN")
	writeFile(t, path, b)
	if _, err := Open(Config{Databases: []string{path}}, nil); !errors.Is(err, ErrFormat) {
		t.Errorf("Open(type 200) = %v, want ErrFormat", err)
	}
}

// TestTrapMaxMindMapped: maxminddb looks ::ffff:a.b.c.d up in the IPv6
// tree as given; geo unmaps first, so the IPv4 answer comes back.
func TestTrapMaxMindMapped(t *testing.T) {
	r, err := maxminddb.OpenBytes(mustEmbedded(t))
	if err != nil {
		t.Fatal(err)
	}
	var raw struct {
		Code string `maxminddb:"country_code"`
	}
	if err := r.Lookup(netip.MustParseAddr("::ffff:81.2.69.142")).Decode(&raw); err != nil {
		t.Fatal(err)
	}
	if raw.Code == "GB" {
		t.Logf("library behaviour changed: it unmaps IPv4-mapped addresses")
	}
	d := mustOpen(t, Config{})
	if loc := d.Lookup(netip.MustParseAddr("::ffff:81.2.69.142")); loc.Country != "GB" {
		t.Errorf("Lookup(::ffff:81.2.69.142) = %+v, want GB", loc)
	}
}

// TestTrapDataPlacesReserved: the shared data really places private and
// documentation ranges in countries (the premise of classifying them
// first); geo labels them.
func TestTrapDataPlacesReserved(t *testing.T) {
	r, err := maxminddb.OpenBytes(mustEmbedded(t))
	if err != nil {
		t.Fatal(err)
	}
	d := mustOpen(t, Config{})
	for _, s := range []string{"192.168.1.1", "172.16.0.1", "198.51.100.1", "203.0.113.1", "2001:db8::1", "2001:2::1"} {
		a := netip.MustParseAddr(s)
		var raw struct {
			Code string `maxminddb:"country_code"`
		}
		if err := r.Lookup(a).Decode(&raw); err != nil {
			t.Fatal(err)
		}
		if raw.Code == "" {
			t.Logf("data changed: %s is no longer placed", s)
		}
		if loc := d.Lookup(a); loc.Country != "" || loc.Source != "reserved" {
			t.Errorf("Lookup(%s) = %+v (raw data says %q), want a reserved label", s, loc, raw.Code)
		}
	}
}

// mustEmbedded is the decompressed embedded database.
func mustEmbedded(t *testing.T) []byte {
	t.Helper()
	b, err := embeddedMMDB()
	if err != nil {
		t.Fatal(err)
	}
	return b
}
