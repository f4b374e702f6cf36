package main

// The brute-force guard's life in the process (docs/bruteforce.md): made
// once at start-up, loaded from its state file, swept and saved in the
// background, reconfigured on reload, served on the admin listener under
// /guard/ (cmd/mailgate/internal/admin). Its bans and counters belong to
// the process, not to one config, so a reload keeps them.

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailgate/mailgate/audit"
	"github.com/mailgate/mailgate/fleet"
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
func startGuard(ctx context.Context, cfg *Config, gdb *geo.DB, history *audit.Store, reg prometheus.Registerer, log *slog.Logger) (*guardRunner, error) {
	r := &guardRunner{done: make(chan struct{})}
	r.geo.Store(gdb)
	glog := log.With("component", "guard")
	o := guard.Options{Logger: glog, Country: r.country}
	if history != nil {
		o.History = history.LoginCountries
	}
	var store *fleet.Store
	if cfg.Guard.Shared.Enabled() {
		// The fleet's shared store (docs/fleet.md).
		fleet.SetLibraryLogger(log.With("component", "fleet"))
		s, err := fleet.New(cfg.Guard.Shared, fleet.Options{Logger: log.With("component", "fleet"), Registerer: reg})
		if err != nil {
			return nil, err
		}
		store = s
		o.Shared, o.HashKey = s, s.HashKey()
	}
	g, err := guard.New(cfg.Guard, o)
	if err != nil {
		if store != nil {
			store.Close()
		}
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
	var feed sync.WaitGroup
	if store != nil {
		feed.Go(func() { store.Run(ctx, g) })
	}
	go func() {
		defer close(r.done)
		g.Maintain(ctx, guardMaintainEvery)
		feed.Wait()
		if store != nil {
			store.Close()
		}
	}()
	return r, nil
}

// checkShared asks the shared store once for check-config: the line to
// print ("" without guard.shared), or an error when its secrets cannot
// be read. A store that does not answer is no error: serve starts
// without it.
func checkShared(cfg *Config) (string, error) {
	if !cfg.Guard.Shared.Enabled() {
		return "", nil
	}
	fleet.SetLibraryLogger(slog.New(slog.DiscardHandler))
	s, err := fleet.New(cfg.Guard.Shared, fleet.Options{})
	if err != nil {
		return "", err
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	where := strings.Join(cfg.Guard.Shared.Addresses, ",")
	if err := s.Ping(ctx); err != nil {
		return fmt.Sprintf("guard.shared: store does not answer (%s): %v", where, err), nil
	}
	return fmt.Sprintf("guard.shared: store answers (%s)", where), nil
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
