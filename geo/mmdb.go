package geo

// Implementation notes (MaxMind DB).
//
// The file is read into memory and opened with maxminddb.OpenBytes rather
// than memory-mapped: an operator (or a careless updater) rewriting the file
// in place under a mapping would crash the process with SIGBUS, and a copy
// lets a reload drop the old reader with nothing to close (maxminddb's Close
// is not safe while lookups run).
//
// Decoding a record allocates strings, so each lookup decodes only on the
// first visit to a data record: records are cached by their data-section
// offset. Country databases have a few hundred distinct records, so after
// warm-up a lookup is a tree walk plus a read-locked map hit with no
// allocation. City databases can have more records than the cache holds;
// past mmdbCacheMax the remaining records are decoded per lookup.
//
// Schemas: GeoIP2/GeoLite2 and DB-IP lite ("country.iso_code",
// "country.names.en", "subdivisions[0].names.en", "city.names.en", falling
// back to "registered_country"), and sapics/ip-location-db ("country_code",
// "state1", "city" as a plain string). Names missing from the file come
// from CountryName.

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oschwald/maxminddb-golang/v2"
)

// mmdbCacheMax bounds the per-database record cache (entries, roughly
// 150 bytes each): large enough for every country database and the busy
// part of a city database.
const mmdbCacheMax = 1 << 16

// mmdbDB is one MaxMind DB file in memory.
type mmdbDB struct {
	info DBInfo
	r    *maxminddb.Reader
	log  *slog.Logger
	// mu guards cache, which maps a data-section offset to its decoded
	// Location ("" Country: the record does not name a country).
	mu    sync.RWMutex
	cache map[uintptr]Location
	// badRecord is set after the first decode failure was logged, so a
	// corrupt data section cannot flood the log.
	badRecord atomic.Bool
}

// openMMDB opens b (a whole MaxMind DB file). b must not change afterwards.
func openMMDB(b []byte, name, file string, log *slog.Logger) (_ *mmdbDB, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: maxminddb panicked: %v", ErrCorrupt, r)
		}
	}()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r, err := maxminddb.OpenBytes(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	m := r.Metadata
	switch {
	case m.BinaryFormatMajorVersion != 2:
		return nil, fmt.Errorf("%w: MaxMind DB format version %d, want 2", ErrCorrupt, m.BinaryFormatMajorVersion)
	case m.IPVersion != 4 && m.IPVersion != 6:
		return nil, fmt.Errorf("%w: MaxMind DB ip_version %d, want 4 or 6", ErrCorrupt, m.IPVersion)
	}
	d := &mmdbDB{
		info: DBInfo{
			Name:    name,
			File:    file,
			Format:  FormatMMDB,
			Type:    m.DatabaseType,
			Built:   m.BuildTime().UTC(),
			IPv6:    m.IPVersion == 6,
			Records: -1, // the node count is not a count of networks
		},
		r:     r,
		log:   log,
		cache: make(map[uintptr]Location),
	}
	return d, nil
}

func (d *mmdbDB) dbInfo() DBInfo { return d.info }

// lookup places a; a must already be unmapped (maxminddb does not unmap
// ::ffff:a.b.c.d itself and would walk the IPv6 tree for it).
func (d *mmdbDB) lookup(a netip.Addr) (loc Location, ok bool) {
	if a.Is6() && !d.info.IPv6 {
		return Location{}, false
	}
	defer func() {
		if r := recover(); r != nil {
			d.logBad(a, fmt.Errorf("maxminddb panicked: %v", r))
			loc, ok = Location{}, false
		}
	}()
	res := d.r.Lookup(a)
	if err := res.Err(); err != nil {
		d.logBad(a, err)
		return Location{}, false
	}
	if !res.Found() {
		return Location{}, false
	}
	off := res.Offset()
	d.mu.RLock()
	loc, hit := d.cache[off]
	d.mu.RUnlock()
	if !hit {
		var err error
		loc, err = d.decode(res)
		if err != nil {
			d.logBad(a, err)
			return Location{}, false
		}
		d.mu.Lock()
		if len(d.cache) < mmdbCacheMax {
			d.cache[off] = loc
		}
		d.mu.Unlock()
	}
	return loc, loc.Country != ""
}

// logBad logs the first failed lookup of this database at Error; later
// ones are dropped (the probe check at open makes them rare).
func (d *mmdbDB) logBad(a netip.Addr, err error) {
	if d.badRecord.CompareAndSwap(false, true) {
		d.log.Error("geo database lookup failed; further failures of this file are not logged",
			"file", d.info.File, "addr", a.String(), "err", err)
	}
}

// decode reads the fields geo needs from one record, whatever the schema.
// A field of an unexpected type counts as absent; a corrupt data section
// is an error.
func (d *mmdbDB) decode(res maxminddb.Result) (Location, error) {
	var firstErr error
	get := func(path ...any) string {
		var s *string
		err := res.DecodePath(&s, path...)
		if err != nil {
			var ide maxminddb.InvalidDatabaseError
			if errors.As(err, &ide) && firstErr == nil {
				firstErr = err
			}
			return ""
		}
		if s == nil {
			return ""
		}
		return *s
	}
	var loc Location
	code, name := get("country", "iso_code"), ""
	if code != "" {
		name = get("country", "names", "en")
	} else if code = get("country_code"); code == "" {
		// GeoIP2 leaves "country" out for some networks (e.g. satellite
		// providers) but still names the registrant's country.
		if code = get("registered_country", "iso_code"); code != "" {
			name = get("registered_country", "names", "en")
		}
	}
	if firstErr != nil {
		return Location{}, firstErr
	}
	if !isAlpha2(code) {
		return loc, nil // not placed (absent, or "-"/"ZZ"-style garbage)
	}
	loc.Country = upper2(code)
	loc.Name = name
	if loc.Name == "" {
		loc.Name = CountryName(loc.Country)
	}
	if loc.Region = get("subdivisions", 0, "names", "en"); loc.Region == "" {
		loc.Region = get("state1")
	}
	if loc.City = get("city", "names", "en"); loc.City == "" {
		loc.City = get("city")
	}
	loc.Source = d.info.Name
	return loc, firstErr
}

// upper2 upper-cases a two-letter ASCII code.
func upper2(s string) string {
	if s[0] >= 'a' || s[1] >= 'a' {
		return string([]byte{s[0] &^ 0x20, s[1] &^ 0x20})
	}
	return s
}

// builtDate formats a build time for humans (and `mailgate lookup`).
func builtDate(t time.Time) string {
	if t.IsZero() {
		return "unknown date"
	}
	return t.UTC().Format(time.DateOnly)
}
