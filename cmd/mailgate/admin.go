package main

// Wiring of the admin listener (cmd/mailgate/internal/admin): the
// gateway's metrics, reload and readiness, and the guard's API, behind
// admin.address and admin.token_file; the web console (console.go)
// behind admin.console.users_file.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/mailgate/mailgate/backend"
	"github.com/mailgate/mailgate/cmd/mailgate/internal/admin"
	"github.com/mailgate/mailgate/console"
)

// geoAgeCheckInterval: how often the database age is logged again.
const geoAgeCheckInterval = 24 * time.Hour

// startOps starts the admin listener (unless admin.address is "off") and
// the daily geo-age warning. The returned func stops both.
func startOps(g *gateway, c AdminConfig, load func() (*Config, error)) (func(), error) {
	token, err := admin.ReadToken(c.TokenFile)
	if err != nil {
		return nil, err
	}
	if err := checkConsoleUsers(c.Console); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	go watchGeoAge(ctx, g)
	if c.Address == "off" {
		return cancel, nil
	}
	var opts []func(*admin.Config)
	if cs := newConsole(g, c.Console); cs != nil {
		go cs.Run(ctx)
		opts = append(opts, func(ac *admin.Config) { ac.Console = cs.Handler() })
	}
	if c.TLS {
		opts = append(opts, func(ac *admin.Config) { ac.TLSConfig = g.tm.ServerConfig("http/1.1") })
	}
	stop := newAdminServer(g, token, load, opts...).Start(c.Address)
	return func() {
		cancel()
		stop()
	}, nil
}

// checkConsoleUsers reads admin.console.users_file as a sign-in will: a
// missing or broken file is an error at start, not a console nobody can
// sign in to.
func checkConsoleUsers(c ConsoleConfig) error {
	if c.UsersFile == "" {
		return nil
	}
	if _, err := console.ReadUsers(c.UsersFile); err != nil {
		return fmt.Errorf("admin.console.users_file: %w", err)
	}
	return nil
}

// readAdminToken reads admin.token_file; "" when none is configured.
// check-config reads it the same way serve does.
func readAdminToken(c AdminConfig) (string, error) {
	return admin.ReadToken(c.TokenFile)
}

// newAdminServer is the admin listener of gateway g; opts add the
// console and TLS.
func newAdminServer(g *gateway, token string, load func() (*Config, error), opts ...func(*admin.Config)) *admin.Server {
	c := admin.Config{
		Token: token,
		Log:   g.log.With("component", "admin"),
		Reload: func() error {
			if load == nil { // tests without a config file
				return errors.New("reload: no config loader")
			}
			return g.reload(load)
		},
		Ready:   func(ctx context.Context) []string { return checkReady(ctx, g.current().cfg, g.tm.Expiry(), time.Now()) },
		Metrics: g.ops.reg,
	}
	if g.guard != nil {
		c.Guard = g.guard.g
	}
	for _, o := range opts {
		o(&c)
	}
	return admin.New(c)
}

// checkReady dials each backend a listener uses and checks that a TLS
// listener has an unexpired certificate to serve.
func checkReady(ctx context.Context, cfg *Config, certs map[string]time.Time, now time.Time) []string {
	// Only backends a listener uses: a site without POP3 must not be
	// unready because nothing answers on the default POP3 address.
	// Submission in imap verify mode checks passwords over IMAP.
	uses := map[string]bool{}
	for _, l := range cfg.Listeners {
		uses[l.Protocol] = true
	}
	if uses["smtp"] && cfg.Backends.SMTP.Verify == "imap" {
		uses["imap"] = true
	}
	var probes []admin.Probe
	for _, p := range []admin.Probe{
		{Name: "imap", Addr: cfg.Backends.IMAP.Address},
		{Name: "pop3", Addr: cfg.Backends.POP3.Address},
		{Name: "smtp", Addr: cfg.Backends.SMTP.Address},
	} {
		if uses[p.Name] {
			probes = append(probes, admin.Probe{Name: "backends." + p.Name, Addr: p.Addr})
		}
	}
	if uses["smtp"] && cfg.Backends.SMTP.Verify == backend.VerifyDovecotAuth {
		// Every submission login asks Dovecot's auth socket first.
		a := cfg.Backends.SMTP.DovecotAuth
		probes = append(probes, admin.Probe{Name: "backends.smtp.dovecot_auth", Addr: a,
			Check: func(ctx context.Context) error { return backend.ProbeDovecotAuth(ctx, a) }})
	}
	needTLS := slices.ContainsFunc(cfg.Listeners, func(l ListenerConfig) bool { return l.TLS != "none" })
	return admin.CheckReady(ctx, probes, needTLS, certs, now)
}

// watchGeoAge repeats the stale database warning daily until ctx ends.
func watchGeoAge(ctx context.Context, g *gateway) {
	t := time.NewTicker(geoAgeCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			warnStaleGeo(g.log, g.current())
		}
	}
}
