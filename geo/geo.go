// Package geo answers "where is this client address?" for the login
// decision: ISO 3166-1 country (and region/city where the database has
// them) from IP2Location BIN and MaxMind DB files, with an embedded default
// database, reserved-range classification and admin CIDR overrides.
//
// geo imports no other mailgate package.
package geo

import (
	"log/slog"
	"net/netip"
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
	// file name ("embedded" for the built-in one).
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
	// answers. Empty means the embedded database only.
	Databases []string `yaml:"databases"`
	// Overrides map a CIDR to a country code or a label; they are checked
	// before any database, longest prefix first.
	Overrides map[string]string `yaml:"overrides"`
	// WatchInterval is how often database files are checked for changes
	// (0 disables polling; SIGHUP still reloads).
	WatchInterval time.Duration `yaml:"watch_interval"`
}

// Validate reports every problem in c at once, each prefixed with its key
// path ("geo.overrides[10.0.0.0/33]: ...").
func (c *Config) Validate() error { panic("TODO") }

// DB is a reloadable chain of databases. Lookups never block on a reload.
type DB struct{}

// Open opens every configured database (or the embedded one) and checks
// it. An unreadable database is an error naming the file and the reason.
func Open(c Config, log *slog.Logger) (*DB, error) { panic("TODO") }

// Lookup places a. It never fails: unplaceable addresses get a Label.
func (d *DB) Lookup(a netip.Addr) Location { panic("TODO") }

// Reload reopens and checks the files, then swaps them in atomically. On
// any error the old databases stay in use.
func (d *DB) Reload() error { panic("TODO") }
