package geo

// Implementation notes (IP2Location BIN).
//
// ip2location-go v9 reads the file through ReadAt for every lookup, takes
// the address as a string, allocates several slices per query, reports bad
// input as text in the country field and panics on a header type byte of
// 27 or more. Its OpenDBWithReader also writes package-level variables
// that every query reads, so opening a file while other goroutines look up
// is a data race inside the library. None of that may reach the login path.
//
// So geo parses the BIN layout itself at open time into a compact sorted
// range table (range starts plus a record index per row, with each distinct
// record decoded once) and answers lookups from memory with a binary
// search: no disk, no allocation, no library call. The library is still
// used, at open time only and behind binLibMu, to cross-check our reading
// of the file: it must give the same country for the probe addresses and
// for the first and last address of a sample of rows. A disagreement fails
// the open, so a file our parser misreads is never served.
//
// Row semantics follow the library's query: row i covers
// [start(i), start(i+1)); the last row runs to the end of the address
// space, and the very last address is looked up as the one before it.

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/ip2location/ip2location-go/v9"
)

// binLibMu serializes every use of ip2location-go: OpenDBWithReader sets
// package-level variables that its queries read (see the notes above).
var binLibMu sync.Mutex

// u128 is an IPv6 address as two big-endian halves, ordered hi then lo.
type u128 struct{ hi, lo uint64 }

func (a u128) less(b u128) bool { return a.hi < b.hi || (a.hi == b.hi && a.lo < b.lo) }

// binDB is an IP2Location BIN file loaded into memory.
type binDB struct {
	info DBInfo
	// v4Start[i] is the first address of IPv4 row i; v4Rec[i] indexes recs.
	v4Start []uint32
	v4Rec   []uint32
	// v6Start and v6Rec are the same for the IPv6 section (empty in the
	// IPv4-only edition).
	v6Start []u128
	v6Rec   []uint32
	// recs holds each distinct record once, ready to return; an entry with
	// Country "" means the file does not place that range ("-").
	recs []Location
}

// openBIN parses b (a whole BIN file) and cross-checks it with the library.
func openBIN(b []byte, name, file string) (*binDB, error) {
	h, err := parseBINHeader(b)
	if err != nil {
		return nil, err
	}
	d := &binDB{info: DBInfo{
		Name:   name,
		File:   file,
		Format: FormatIP2Location,
		Type:   fmt.Sprintf("DB%d", h.dbType),
		Built:  time.Date(2000+int(h.year), time.Month(h.month), int(h.day), 0, 0, 0, 0, time.UTC),
		IPv6:   h.v6Count > 0,
	}}
	p := binParser{b: b, h: h, name: name, recIdx: map[[3]uint32]uint32{}, strs: map[uint32]string{}}
	if d.v4Start, d.v4Rec, err = p.readV4(); err != nil {
		return nil, err
	}
	if h.v6Count > 0 {
		if d.v6Start, d.v6Rec, err = p.readV6(); err != nil {
			return nil, err
		}
	}
	d.recs = p.recs
	d.info.Records = len(d.v4Start) + len(d.v6Start)
	if err := d.crossCheck(b); err != nil {
		return nil, err
	}
	return d, nil
}

// binParser holds the state of one parse: the file and the records seen.
type binParser struct {
	b      []byte
	h      binHeader
	name   string
	recIdx map[[3]uint32]uint32 // (country, region, city) pointers → recs index
	strs   map[uint32]string    // string pointer → decoded string
	recs   []Location
}

func (p *binParser) readV4() ([]uint32, []uint32, error) {
	n := int(p.h.v4Count)
	starts := make([]uint32, n)
	recs := make([]uint32, n)
	rowSize := int(p.h.v4RowSize())
	base := int(p.h.v4Addr - 1)
	for i := range n {
		row := p.b[base+i*rowSize : base+(i+1)*rowSize]
		starts[i] = binary.LittleEndian.Uint32(row)
		if i > 0 && starts[i] <= starts[i-1] {
			return nil, nil, fmt.Errorf("%w: BIN IPv4 row %d starts at or before row %d", ErrCorrupt, i, i-1)
		}
		r, err := p.record(row[4:], "IPv4", i)
		if err != nil {
			return nil, nil, err
		}
		recs[i] = r
	}
	return starts, recs, nil
}

func (p *binParser) readV6() ([]u128, []uint32, error) {
	n := int(p.h.v6Count)
	starts := make([]u128, n)
	recs := make([]uint32, n)
	rowSize := int(p.h.v6RowSize())
	base := int(p.h.v6Addr - 1)
	for i := range n {
		row := p.b[base+i*rowSize : base+(i+1)*rowSize]
		// The range start is a little-endian 128-bit integer.
		starts[i] = u128{hi: binary.LittleEndian.Uint64(row[8:]), lo: binary.LittleEndian.Uint64(row)}
		if i > 0 && !starts[i-1].less(starts[i]) {
			return nil, nil, fmt.Errorf("%w: BIN IPv6 row %d starts at or before row %d", ErrCorrupt, i, i-1)
		}
		r, err := p.record(row[16:], "IPv6", i)
		if err != nil {
			return nil, nil, err
		}
		recs[i] = r
	}
	return starts, recs, nil
}

// record decodes the columns after the range start (cols) into a recs
// index, decoding each distinct record once.
func (p *binParser) record(cols []byte, family string, row int) (uint32, error) {
	// Column n (1-based, column 1 being the range start) is at (n-2)*4.
	var key [3]uint32
	key[0] = binary.LittleEndian.Uint32(cols[0:])
	if p.h.dbType >= 3 {
		key[1] = binary.LittleEndian.Uint32(cols[4:])
		key[2] = binary.LittleEndian.Uint32(cols[8:])
	}
	if i, ok := p.recIdx[key]; ok {
		return i, nil
	}
	fail := func(err error) (uint32, error) {
		return 0, fmt.Errorf("%w: BIN %s row %d: %w", ErrCorrupt, family, row, err)
	}
	code, err := p.str(key[0])
	if err != nil {
		return fail(fmt.Errorf("country code: %w", err))
	}
	name, err := p.str(key[0] + 3) // the library reads the name at code+3
	if err != nil {
		return fail(fmt.Errorf("country name: %w", err))
	}
	var loc Location
	switch {
	case code == "-" || code == "":
		// IP2Location's "not placed".
	case isAlpha2(code):
		loc.Country = strings.ToUpper(code)
		loc.Name = name
		if loc.Name == "" || loc.Name == "-" {
			loc.Name = CountryName(loc.Country)
		}
		loc.Source = p.name
		if p.h.dbType >= 3 {
			if loc.Region, err = p.str(key[1]); err != nil {
				return fail(fmt.Errorf("region: %w", err))
			}
			if loc.City, err = p.str(key[2]); err != nil {
				return fail(fmt.Errorf("city: %w", err))
			}
			loc.Region, loc.City = dash(loc.Region), dash(loc.City)
		}
	default:
		return fail(fmt.Errorf("country code %q is not ISO 3166-1 alpha-2", code))
	}
	i := uint32(len(p.recs))
	p.recs = append(p.recs, loc)
	p.recIdx[key] = i
	return i, nil
}

// str reads a length-prefixed string at the 0-based offset ptr.
func (p *binParser) str(ptr uint32) (string, error) {
	if s, ok := p.strs[ptr]; ok {
		return s, nil
	}
	if uint64(ptr) >= uint64(len(p.b)) {
		return "", fmt.Errorf("string pointer %d beyond the end of the file (%d bytes)", ptr, len(p.b))
	}
	n := uint64(p.b[ptr])
	if uint64(ptr)+1+n > uint64(len(p.b)) {
		return "", fmt.Errorf("string at %d runs past the end of the file", ptr)
	}
	raw := p.b[uint64(ptr)+1 : uint64(ptr)+1+n]
	var s string
	if utf8.Valid(raw) {
		s = string(raw)
	} else {
		s = strings.ToValidUTF8(string(raw), "\uFFFD")
	}
	p.strs[ptr] = s
	return s, nil
}

// dash maps IP2Location's "-" (no value) to "".
func dash(s string) string {
	if s == "-" {
		return ""
	}
	return s
}

// isAlpha2 reports whether s is two ASCII letters.
func isAlpha2(s string) bool {
	if len(s) != 2 {
		return false
	}
	for i := range 2 {
		c := s[i] | 0x20
		if c < 'a' || c > 'z' {
			return false
		}
	}
	return true
}

// lookup answers from the in-memory table; ok is false when the file does
// not place a (no row, or "-", or an IPv6 address in the IPv4 edition).
func (d *binDB) lookup(a netip.Addr) (Location, bool) {
	i, ok := d.row(a)
	if !ok {
		return Location{}, false
	}
	loc := d.recs[i]
	return loc, loc.Country != ""
}

// row returns the recs index for a (an IPv4 or non-mapped IPv6 address).
func (d *binDB) row(a netip.Addr) (uint32, bool) {
	if a.Is4() {
		b := a.As4()
		x := binary.BigEndian.Uint32(b[:])
		if x == ^uint32(0) {
			x-- // the library's own rule for the last address
		}
		// Largest i with v4Start[i] <= x.
		lo, hi := 0, len(d.v4Start)
		for lo < hi {
			m := int(uint(lo+hi) >> 1)
			if d.v4Start[m] <= x {
				lo = m + 1
			} else {
				hi = m
			}
		}
		if lo == 0 {
			return 0, false
		}
		return d.v4Rec[lo-1], true
	}
	if len(d.v6Start) == 0 {
		return 0, false
	}
	b := a.As16()
	x := u128{hi: binary.BigEndian.Uint64(b[:8]), lo: binary.BigEndian.Uint64(b[8:])}
	if x.hi == ^uint64(0) && x.lo == ^uint64(0) {
		x.lo--
	}
	lo, hi := 0, len(d.v6Start)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if !x.less(d.v6Start[m]) {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo == 0 {
		return 0, false
	}
	return d.v6Rec[lo-1], true
}

func (d *binDB) dbInfo() DBInfo { return d.info }

// crossCheckSamples is how many rows per section crossCheck compares with
// the library (first and last address of each): enough to catch a
// misread layout, cheap enough for every open (a few milliseconds).
const crossCheckSamples = 512

// nopCloser lets a bytes.Reader serve as the library's DBReader.
type nopCloser struct{ *bytes.Reader }

func (nopCloser) Close() error { return nil }

// crossCheck compares our table with ip2location-go on the probe addresses
// and on sampled rows. Library panics become errors.
func (d *binDB) crossCheck(b []byte) (err error) {
	binLibMu.Lock()
	defer binLibMu.Unlock()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: ip2location-go panicked: %v", ErrCorrupt, r)
		}
	}()
	lib, err := ip2location.OpenDBWithReader(nopCloser{bytes.NewReader(b)})
	if err != nil {
		return fmt.Errorf("%w: ip2location-go: %w", ErrCorrupt, err)
	}
	var addrs []netip.Addr
	for _, s := range probeAddrs {
		a := netip.MustParseAddr(s)
		if a.Is6() && !d.info.IPv6 {
			continue
		}
		addrs = append(addrs, a)
	}
	addrs = appendSamples4(addrs, d.v4Start)
	addrs = appendSamples6(addrs, d.v6Start)
	for _, a := range addrs {
		rec, qerr := lib.Get_country_short(a.String())
		if qerr != nil {
			return fmt.Errorf("%w: ip2location-go looking up %v: %w", ErrCorrupt, a, qerr)
		}
		want := rec.Country_short
		if want == "-" {
			want = ""
		}
		var got string
		if i, ok := d.row(a); ok {
			got = d.recs[i].Country
		}
		if !strings.EqualFold(got, want) {
			if len(want) > 2 { // the library's error text, e.g. a truncated read
				return fmt.Errorf("%w: ip2location-go answers %q for %v", ErrCorrupt, want, a)
			}
			return fmt.Errorf("%w: our reader says %q for %v, ip2location-go says %q", ErrCorrupt, got, a, want)
		}
	}
	return nil
}

// appendSamples4 adds the first and last address of up to
// crossCheckSamples evenly spaced IPv4 rows.
func appendSamples4(addrs []netip.Addr, starts []uint32) []netip.Addr {
	if len(starts) < 2 {
		return addrs
	}
	step := max(1, (len(starts)-1)/crossCheckSamples)
	for i := 0; i+1 < len(starts); i += step {
		first, last := starts[i], starts[i+1]-1
		addrs = append(addrs, netip.AddrFrom4(be4(first)), netip.AddrFrom4(be4(last)))
	}
	return addrs
}

// appendSamples6 is appendSamples4 for IPv6 rows. IPv4-mapped, 6to4 and
// Teredo rows are skipped: the library answers those from its IPv4 section.
func appendSamples6(addrs []netip.Addr, starts []u128) []netip.Addr {
	if len(starts) < 2 {
		return addrs
	}
	step := max(1, (len(starts)-1)/crossCheckSamples)
	for i := 0; i+1 < len(starts); i += step {
		first, next := starts[i], starts[i+1]
		last := u128{hi: next.hi, lo: next.lo - 1}
		if next.lo == 0 {
			last.hi--
		}
		for _, x := range []u128{first, last} {
			a := netip.AddrFrom16(be16(x))
			if a.Is4In6() || ip2locRemaps(a) {
				continue
			}
			addrs = append(addrs, a)
		}
	}
	return addrs
}

// ip2locRemaps reports whether ip2location-go answers a from its IPv4
// section: 6to4 (2002::/16) and Teredo (2001::/32).
func ip2locRemaps(a netip.Addr) bool {
	b := a.As16()
	return (b[0] == 0x20 && b[1] == 0x02) || (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0 && b[3] == 0)
}

func be4(x uint32) [4]byte {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], x)
	return b
}

func be16(x u128) [16]byte {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], x.hi)
	binary.BigEndian.PutUint64(b[8:], x.lo)
	return b
}
