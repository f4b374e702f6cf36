package audit

import (
	"errors"
	"fmt"
	"time"
)

// Config is the `audit:` section of mailgate's config file
// (docs/config.md, docs/audit.md). An empty Path turns the audit off.
type Config struct {
	// Path is the database file; its directory must exist. Empty: no
	// audit.
	Path string `yaml:"path"`
	// Retention: rows whose day is older are purged in the background.
	Retention time.Duration `yaml:"retention"`
	// NetworkOnly stores only the /24 (IPv4) or /48 (IPv6) of client
	// addresses, never the address itself.
	NetworkOnly bool `yaml:"network_only"`
	// Node names this mailgate in every row; empty: the config's hostname.
	Node string `yaml:"node"`
	// Queue is how many decisions may wait for the writer; beyond it a
	// decision is dropped and counted, never a login delayed.
	Queue int `yaml:"queue"`
	// BatchRows and BatchInterval bound one write transaction: it is
	// written when this many decisions wait or this long after the first.
	BatchRows     int           `yaml:"batch_rows"`
	BatchInterval time.Duration `yaml:"batch_interval"`
	// MaxFailedRows caps an account's rows of refused attempts per day,
	// and likewise its pass rows; beyond it they are folded into one
	// "(other)" address row.
	MaxFailedRows int `yaml:"max_failed_rows"`
	// MaxUnknownAccounts caps the distinct never-seen-to-pass accounts
	// recorded per day; beyond it they are folded into account "(other)".
	MaxUnknownAccounts int `yaml:"max_unknown_accounts"`
	// MaxUnknownRows caps one unknown account's rows per day.
	MaxUnknownRows int `yaml:"max_unknown_rows"`
}

// Defaults, documented in docs/config.md.
const (
	DefaultRetention          = 90 * 24 * time.Hour
	DefaultQueue              = 10000
	DefaultBatchRows          = 500
	DefaultBatchInterval      = time.Second
	DefaultMaxFailedRows      = 200
	DefaultMaxUnknownAccounts = 1000
	DefaultMaxUnknownRows     = 5
)

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	if c.Retention == 0 {
		c.Retention = DefaultRetention
	}
	if c.Queue == 0 {
		c.Queue = DefaultQueue
	}
	if c.BatchRows == 0 {
		c.BatchRows = DefaultBatchRows
	}
	if c.BatchInterval == 0 {
		c.BatchInterval = DefaultBatchInterval
	}
	if c.MaxFailedRows == 0 {
		c.MaxFailedRows = DefaultMaxFailedRows
	}
	if c.MaxUnknownAccounts == 0 {
		c.MaxUnknownAccounts = DefaultMaxUnknownAccounts
	}
	if c.MaxUnknownRows == 0 {
		c.MaxUnknownRows = DefaultMaxUnknownRows
	}
	return c
}

// Validate reports every bad value, naming its key path.
func (c Config) Validate() error {
	var errs []error
	neg := func(key string, bad bool) {
		if bad {
			errs = append(errs, fmt.Errorf("audit.%s: must not be negative", key))
		}
	}
	neg("retention", c.Retention < 0)
	neg("queue", c.Queue < 0)
	neg("batch_rows", c.BatchRows < 0)
	neg("batch_interval", c.BatchInterval < 0)
	neg("max_failed_rows", c.MaxFailedRows < 0)
	neg("max_unknown_accounts", c.MaxUnknownAccounts < 0)
	neg("max_unknown_rows", c.MaxUnknownRows < 0)
	if c.Retention > 0 && c.Retention < 24*time.Hour {
		errs = append(errs, errors.New("audit.retention: must be at least 24h (rows are kept by day)"))
	}
	if c.BatchInterval > time.Minute {
		errs = append(errs, errors.New("audit.batch_interval: must be at most 1m"))
	}
	return errors.Join(errs...)
}
