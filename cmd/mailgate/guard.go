package main

// The brute-force guard's life in the process (docs/bruteforce.md): made
// once at start-up, loaded from its state file, swept and saved in the
// background, reconfigured on reload, served on the admin listener under
// /guard/ (cmd/mailgate/internal/admin). Its bans and counters belong to
// the process, not to one config, so a reload keeps them.

import (
	"context"
	"github.com/mailgate/mailgate/audit"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/mailgate/mailgate/geo"
	"github.com/mailgate/mailgate/guard"
)

const (
	// guardMaintainEvery: sweep expired entries and save the state file
	// this often; a crash loses at most this much of the ban list.
	guardMaintainEvery = time.Minute
)

// guardRunner owns the process's guard and what it needs from the
// current state.
type guardRunner struct {
	g *guard.Guard
	// geo is the current state's database for deny_countries; swapped on
	// reload without taking the gateway's lock, which a reload holds
	// while it opens databases and Accept must not wait for.
	geo  atomic.Pointer[geo.DB]
	done chan struct{} // closed when Maintain has made its final save
}

// startGuard makes the guard from cfg.Guard, loads its state file and
// starts its maintenance until ctx ends. A state file that cannot be
// read is logged and ignored: refusing to start would let an attacker
// who corrupts it take mail down.
//
// history, when the audit database is on, lets the compromise signal
// read a login's countries from before this process.
func startGuard(ctx context.Context, cfg *Config, gdb *geo.DB, history *audit.Store, log *slog.Logger) (*guardRunner, error) {
	r := &guardRunner{done: make(chan struct{})}
	r.geo.Store(gdb)
	glog := log.With("component", "guard")
	o := guard.Options{Logger: glog, Country: r.country}
	if history != nil {
		o.History = history.LoginCountries
	}
	g, err := guard.New(cfg.Guard, o)
	if err != nil {
		return nil, err
	}
	r.g = g
	if p := cfg.Guard.StateFile; p != "" {
		if err := g.Load(p); err != nil {
			glog.Error("guard state not loaded; starting with no bans or lockouts", "file", p, "err", err)
		} else {
			glog.Info("guard state loaded", "file", p, "bans", len(g.Bans()), "lockouts", len(g.Lockouts()))
		}
	}
	go func() {
		defer close(r.done)
		g.Maintain(ctx, guardMaintainEvery)
	}()
	return r, nil
}

// country places a for deny_countries: the ISO code, or "" when the
// address has none (private, unknown), which no deny rule matches.
func (r *guardRunner) country(a netip.Addr) string {
	return r.geo.Load().Lookup(a).Country
}

// reload applies a new config and the new state's geo database. The
// config was validated as a whole already, so an error here is a bug;
// it is logged and the guard keeps its old settings.
func (r *guardRunner) reload(cfg *Config, gdb *geo.DB, log *slog.Logger) {
	r.geo.Store(gdb)
	if err := r.g.Reload(cfg.Guard); err != nil {
		log.Error("reload: guard settings kept", "err", err)
	}
}

// wait blocks until the final save after the maintenance context ended.
func (r *guardRunner) wait() { <-r.done }
