// Package geo answers "where is this client address?" for the login
// decision: ISO 3166-1 country (and region/city where the database has
// them) from IP2Location BIN and MaxMind DB files, with an embedded default
// database, reserved-range classification and admin CIDR overrides.
//
// Lookup order: the address is normalized (IPv4-mapped, 6to4, Teredo and
// NAT64 addresses become the IPv4 address they carry), then admin
// overrides (longest prefix first), then the special-purpose ranges of the
// IANA registries, then each database in order. Lookups read one immutable
// snapshot through an atomic pointer: a reload never blocks or fails them.
//
// geo also holds the one parser for the network lists an admin writes
// (ParseNetwork, netlist.go), so that policy, the guard, proxy and cmd
// read them by one rule.
//
// geo imports no other mailgate package.
package geo

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Location is the answer for one address.
type Location struct {
	// Country is the ISO 3166-1 alpha-2 code in upper case, or "" when the
	// address is not placed in a country (see Label).
	Country string
	// Label names the class of an address that has no country: "loopback",
	// "private", "link-local", "cgnat", "documentation", "reserved",
	// "multicast", "unspecified", "unknown" (no database placed it), or a
	// label an admin gave in an override. Empty when Country is set.
	Label string
	// Name is the English country name, or a description of the label.
	Name string
	// Region and City are set only when the database has them.
	Region, City string
	// Source says what answered: "override", "reserved", or the database's
	// file name ("embedded" for the built-in one); "" with Label "unknown".
	Source string
}

// Code returns Country when set, else Label: the one token policy rules and
// logs use for "where".
func (l Location) Code() string {
	if l.Country != "" {
		return l.Country
	}
	return l.Label
}

// Locator is the one method the rest of mailgate uses.
type Locator interface {
	Lookup(netip.Addr) Location
}

// Config is the `geo:` section of mailgate's config file.
type Config struct {
	// Databases are tried in order; the first that places the address
	// answers. Empty means the embedded database only. The name "embedded"
	// stands for the built-in database anywhere in the list (write
	// "./embedded" for a file of that name).
	Databases []string `yaml:"databases"`
	// Overrides map a CIDR (or a single address) to a country code or a
	// label; they are checked before any database and before the reserved
	// ranges, longest prefix first.
	Overrides map[string]string `yaml:"overrides"`
	// WatchInterval is how often Watch checks the database files for
	// changes. Zero means DefaultWatchInterval; a negative value disables
	// polling (SIGHUP still reloads).
	WatchInterval time.Duration `yaml:"watch_interval"`
}

// DefaultWatchInterval is used when Config.WatchInterval is zero: frequent
// enough that a nightly update is live within a minute, rare enough that
// two stat calls per file cost nothing.
const DefaultWatchInterval = 30 * time.Second

// EmbeddedName is the Databases entry, DBInfo.Name and Location.Source of
// the built-in database.
const EmbeddedName = "embedded"

// Validate reports every problem in c at once, each prefixed with its key
// path ("geo.overrides[10.0.0.0/33]: ..."). It does not open files; Open
// does.
func (c *Config) Validate() error {
	var errs []error
	seen := map[string]int{}
	for i, p := range c.Databases {
		switch {
		case strings.TrimSpace(p) == "":
			errs = append(errs, fmt.Errorf("geo.databases[%d]: empty path", i))
		case seen[filepath.Clean(p)] > 0:
			errs = append(errs, fmt.Errorf("geo.databases[%d]: %q is already listed", i, p))
		}
		seen[filepath.Clean(p)]++
	}
	keys := make([]string, 0, len(c.Overrides))
	for k := range c.Overrides {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if _, err := parseOverride(k, c.Overrides[k]); err != nil {
			errs = append(errs, fmt.Errorf("geo.overrides[%s]: %w", k, err))
		}
	}
	return errors.Join(errs...)
}

// DBInfo describes one opened database, for `mailgate lookup`,
// `check-config`, start-up logs and the IPv6 warning.
type DBInfo struct {
	// Name is what Location.Source says for answers of this database: the
	// file's base name, the configured path when two base names clash, or
	// "embedded".
	Name string
	// File is the configured path ("embedded" for the built-in database).
	File string
	// Format is FormatMMDB or FormatIP2Location.
	Format Format
	// Type is the database type: the MaxMind database_type
	// ("GeoLite2-Country") or the IP2Location product ("DB1").
	Type string
	// Built is the build date the file states (IP2Location: day precision).
	Built time.Time
	// IPv6 is false for IPv4-only files, which place no IPv6 client.
	IPv6 bool
	// Records is the number of rows for IP2Location; -1 when unknown.
	Records int
}

// String is a one-line description for logs and `mailgate check-config`:
// "GeoLite2-Country.mmdb (mmdb GeoLite2-Country, built 2026-11-20, IPv4+IPv6)".
func (in DBInfo) String() string {
	fam := "IPv4+IPv6"
	if !in.IPv6 {
		fam = "IPv4 only"
	}
	rows := ""
	if in.Records >= 0 {
		rows = fmt.Sprintf(", %d rows", in.Records)
	}
	name := in.File
	if name == "" {
		name = in.Name
	}
	return fmt.Sprintf("%s (%s %s, built %s, %s%s)", name, in.Format, in.Type, builtDate(in.Built), fam, rows)
}

// reader is one opened database.
type reader interface {
	// lookup places a normalized address; ok is false when this database
	// does not place it.
	lookup(netip.Addr) (Location, bool)
	dbInfo() DBInfo
}

// snapshot is everything a lookup reads. It is never modified after it is
// published, so lookups need no lock.
type snapshot struct {
	cfg       Config
	overrides []override
	dbs       []reader
	// stamps are the files' (size, mtime) when they were read, for Watch.
	stamps []fileStamp
}

// DB is a reloadable chain of databases. Lookups never block on a reload.
type DB struct {
	log *slog.Logger
	cur atomic.Pointer[snapshot]
	// reloadMu serializes Reload, ReloadConfig and Watch's reloads; lookups
	// never take it.
	reloadMu sync.Mutex
	// lastAt and lastErr record the most recent reload attempt (Reload,
	// ReloadConfig or Watch), for the reload metrics. Guarded by reloadMu.
	lastAt  time.Time
	lastErr error
	// failed maps a file to the version of it that last failed to load
	// (size -1: it could not be read), so Watch reports each bad version
	// once. Guarded by reloadMu.
	failed map[string]fileStamp
}

// Open opens every configured database (or the embedded one) and checks
// it. An unreadable database is an error naming the file and the reason.
// A nil log discards.
func Open(c Config, log *slog.Logger) (*DB, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &DB{log: log, failed: map[string]fileStamp{}}
	s, err := d.build(c)
	if err != nil {
		return nil, err
	}
	d.cur.Store(s)
	d.logLoaded(s, "geo database loaded")
	return d, nil
}

// staleAfter is the age from which a database is logged as stale: address
// blocks change hands every month, and the free databases are rebuilt
// weekly (GeoLite2) or monthly (IP2Location LITE).
const staleAfter = 180 * 24 * time.Hour

// logLoaded logs each database of s, and warns about stale ones.
func (d *DB) logLoaded(s *snapshot, msg string) {
	for _, db := range s.dbs {
		in := db.dbInfo()
		d.log.Info(msg, "file", in.File, "format", in.Format, "type", in.Type,
			"built", builtDate(in.Built), "ipv6", in.IPv6)
		if age := time.Since(in.Built); !in.Built.IsZero() && age > staleAfter {
			d.log.Warn("geo database is stale; configure a current one (see docs/geo.md)",
				"file", in.File, "built", builtDate(in.Built), "age_days", int(age.Hours()/24))
		}
	}
}

// build validates c and opens every database into a new snapshot.
func (d *DB) build(c Config) (*snapshot, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	// The snapshot keeps its own copy: the caller may reuse c.
	c.Databases = slices.Clone(c.Databases)
	c.Overrides = maps.Clone(c.Overrides)
	s := &snapshot{cfg: c}
	for k, v := range c.Overrides {
		o, _ := parseOverride(k, v) // checked by Validate
		s.overrides = append(s.overrides, o)
	}
	sortOverrides(s.overrides)
	files := c.Databases
	if len(files) == 0 {
		files = []string{EmbeddedName}
	}
	names := sourceNames(files)
	for i, f := range files {
		db, st, err := openOne(f, names[i], d.log)
		if err != nil {
			return nil, err
		}
		s.dbs = append(s.dbs, db)
		s.stamps = append(s.stamps, st)
	}
	return s, nil
}

// sourceNames gives each file its Location.Source: the base name, or the
// path as configured when base names clash.
func sourceNames(files []string) []string {
	count := map[string]int{}
	for _, f := range files {
		count[filepath.Base(f)]++
	}
	names := make([]string, len(files))
	for i, f := range files {
		names[i] = filepath.Base(f)
		if f == EmbeddedName || count[names[i]] > 1 {
			names[i] = f
		}
	}
	return names
}

// maxDBSize bounds what geo reads into memory: the largest commercial
// IP2Location BIN (DB26 IPv6) is about 3 GiB; anything larger is a mistake.
const maxDBSize = 4 << 30

// openOne reads and opens one database; errors name the file.
func openOne(file, name string, log *slog.Logger) (reader, fileStamp, error) {
	if file == EmbeddedName {
		b, err := embeddedMMDB()
		if err != nil {
			return nil, fileStamp{}, fmt.Errorf("geo: embedded database: %w", err)
		}
		db, err := openBytes(b, name, file, log)
		if err != nil {
			return nil, fileStamp{}, fmt.Errorf("geo: embedded database: %w", err)
		}
		return db, fileStamp{}, nil
	}
	b, st, err := readFile(file)
	if err != nil {
		return nil, fileStamp{}, fmt.Errorf("geo: database %s: %w", file, err)
	}
	db, err := openBytes(b, name, file, log)
	if err != nil {
		return nil, fileStamp{}, fmt.Errorf("geo: database %s: %w", file, err)
	}
	return db, st, nil
}

// readFile reads a database with the stamp of what was read.
func readFile(file string) ([]byte, fileStamp, error) {
	// Refuse non-regular files before opening: opening a FIFO for reading
	// blocks until a writer appears, and a reload must never hang.
	if fi, err := os.Stat(file); err != nil {
		return nil, fileStamp{}, err
	} else if !fi.Mode().IsRegular() {
		return nil, fileStamp{}, fmt.Errorf("not a regular file (%s)", fi.Mode().Type())
	}
	f, err := os.Open(file)
	if err != nil {
		return nil, fileStamp{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fileStamp{}, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fileStamp{}, fmt.Errorf("not a regular file (%s)", fi.Mode().Type())
	}
	if fi.Size() > maxDBSize {
		return nil, fileStamp{}, fmt.Errorf("%d bytes is larger than any geo database (limit %d)", fi.Size(), int64(maxDBSize))
	}
	b := make([]byte, fi.Size())
	n, err := f.ReadAt(b, 0)
	if err != nil && n != len(b) {
		return nil, fileStamp{}, fmt.Errorf("reading: %w", err)
	}
	return b, stampOf(fi), nil
}

// openBytes detects the format of b and opens it, then runs the probes.
func openBytes(b []byte, name, file string, log *slog.Logger) (reader, error) {
	f, err := detectFormat(b)
	if err != nil {
		return nil, err
	}
	var db reader
	switch f {
	case FormatIP2Location:
		db, err = openBIN(b, name, file)
	default:
		db, err = openMMDB(b, name, file, log)
	}
	if err != nil {
		return nil, err
	}
	if err := probe(db); err != nil {
		return nil, err
	}
	return db, nil
}

// probeAddrs are well-known public addresses on every continent (DNS
// resolvers and root servers, MaxMind's test address 81.2.69.142). A usable
// database places at least one; none may make a reader fail.
var probeAddrs = []string{
	"8.8.8.8", "1.1.1.1", "9.9.9.9", "81.2.69.142", "193.0.14.129",
	"202.12.27.33", "200.160.0.8", "196.216.2.1", "199.7.83.42",
	"2001:4860:4860::8888", "2606:4700:4700::1111", "2001:7fd::1",
	"2001:dc3::35", "2a00:1450:4001::1",
}

// probe checks that db places at least one probe address with a sensible
// answer (an upper-case ISO code and a name). A database without countries
// (an ASN database, say) fails here rather than refusing every login.
func probe(db reader) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: reader panicked: %v", ErrProbe, r)
		}
	}()
	placed := 0
	for _, s := range probeAddrs {
		loc, ok := db.lookup(netip.MustParseAddr(s))
		if !ok {
			continue
		}
		if !isAlpha2(loc.Country) || loc.Country != upper2(loc.Country) {
			return fmt.Errorf("%w: %s placed in %q", ErrProbe, s, loc.Country)
		}
		placed++
	}
	if placed == 0 {
		return fmt.Errorf("%w: it places none of %d well-known public addresses (no country data?)", ErrProbe, len(probeAddrs))
	}
	return nil
}

// Lookup places a. It never fails: unplaceable addresses get a Label.
func (d *DB) Lookup(a netip.Addr) Location {
	return d.cur.Load().lookup(a)
}

func (s *snapshot) lookup(a netip.Addr) Location {
	if !a.IsValid() {
		return Location{Label: LabelUnknown, Name: "invalid address", Source: "reserved"}
	}
	orig := a.WithZone("").Unmap()
	a = normalize(a)
	if len(s.overrides) > 0 {
		// An override may name the address as seen or the IPv4 address a
		// tunnel address carries.
		ohi, olo := split(orig)
		hi, lo := split(a)
		for i := range s.overrides {
			o := &s.overrides[i]
			if o.c.contains(ohi, olo) || o.c.contains(hi, lo) {
				return o.loc
			}
		}
	}
	if l := classify(a); l != "" {
		return Location{Label: l, Name: labelNames[l], Source: "reserved"}
	}
	for _, db := range s.dbs {
		if loc, ok := db.lookup(a); ok {
			return loc
		}
	}
	return Location{Label: LabelUnknown, Name: labelNames[LabelUnknown]}
}

// Reload reopens and checks the files, then swaps them in atomically. On
// any error the old databases stay in use.
func (d *DB) Reload() error {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	return d.reloadLocked(d.cur.Load().cfg)
}

// ReloadConfig is Reload with a new `geo:` section (new files, overrides,
// interval): mailgate calls it when the config file is reloaded. On any
// error the old configuration and databases stay in use.
func (d *DB) ReloadConfig(c Config) error {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	return d.reloadLocked(c)
}

func (d *DB) reloadLocked(c Config) error {
	s, err := d.build(c)
	d.lastAt, d.lastErr = time.Now(), err
	if err != nil {
		d.log.Error("geo reload failed; keeping the databases in use", "err", err)
		return err
	}
	d.cur.Store(s)
	d.logLoaded(s, "geo database reloaded")
	return nil
}

// LastReload reports when the last reload attempt (by Reload,
// ReloadConfig or Watch) ended and its error; a zero time means none yet.
func (d *DB) LastReload() (time.Time, error) {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	return d.lastAt, d.lastErr
}

// Info describes the databases in use, in lookup order.
func (d *DB) Info() []DBInfo {
	s := d.cur.Load()
	out := make([]DBInfo, len(s.dbs))
	for i, db := range s.dbs {
		out[i] = db.dbInfo()
	}
	return out
}

// IPv4Only returns the files (DBInfo.File) that hold no IPv6 data. With an
// IPv6 listener such a file places no IPv6 client, so every IPv6 login
// would fall through to a later database or be "unknown": mailgate warns
// at start-up when this is not empty and IPv6 listeners exist.
func (d *DB) IPv4Only() []string {
	var out []string
	for _, in := range d.Info() {
		if !in.IPv6 {
			out = append(out, in.File)
		}
	}
	return out
}
