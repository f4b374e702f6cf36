package main

// The nginx auth_http adapter (adapter/nginx, docs/nginx-adapter.md):
// its config checks, its start with the gateway and its new Deps on each
// reload.

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/mailgate/mailgate/adapter"
	"github.com/mailgate/mailgate/adapter/nginx"
	"github.com/mailgate/mailgate/backend"
	"github.com/mailgate/mailgate/policy"
)

// nginxKey is the section's path in messages.
const nginxKey = "adapters.nginx"

// adapterGrace is how long auth_http requests in flight may finish at
// shutdown: a decision takes at most a tarpit plus a backend login.
const adapterGrace = 30 * time.Second

// validateNginxAdapter checks adapters.nginx and, when it is on, that
// every backend nginx may be sent to is an IP literal in plaintext:
// nginx's Auth-Server takes no host name, and its mail proxy speaks
// neither implicit TLS nor STARTTLS to a backend.
func (c *Config) validateNginxAdapter() error {
	n := c.Adapters.Nginx
	if !n.Enabled() {
		return nil
	}
	errs := []error{n.Validate(nginxKey)}
	for _, b := range c.nginxBackends() {
		if _, err := nginx.ServerFor(b.key, b.opts.Address); err != nil {
			errs = append(errs, err)
		}
		if b.opts.TLS != backend.TLSNone {
			errs = append(errs, fmt.Errorf("%s.tls: %s, but nginx's mail proxy logs in to the backend in plaintext; while %s is on, use tls: none (a backend on loopback or a trusted network)",
				b.key, b.opts.TLS, nginxKey))
		}
	}
	return errors.Join(errs...)
}

type nginxBackend struct {
	key   string
	proto policy.Protocol
	opts  *backend.Options
}

// nginxBackends are the backends nginx is sent to, by protocol.
func (c *Config) nginxBackends() []nginxBackend {
	var bs []nginxBackend
	for _, b := range []struct {
		key   string
		proto policy.Protocol
		bc    *BackendConfig
	}{{"backends.imap", policy.IMAP, c.Backends.IMAP}, {"backends.pop3", policy.POP3, c.Backends.POP3}} {
		if b.bc != nil {
			bs = append(bs, nginxBackend{b.key, b.proto, &b.bc.Options})
		}
	}
	if c.Backends.SMTP != nil {
		bs = append(bs, nginxBackend{"backends.smtp", policy.SMTP, &c.Backends.SMTP.Options})
	}
	return bs
}

// nginxDeps builds what the adapter judges with from a state.
func (g *gateway) nginxDeps(st *state) *nginx.Deps {
	cfg := st.cfg
	d := &nginx.Deps{
		Logger:       g.log,
		Policy:       st.pol,
		Guard:        g.guard.g,
		Servers:      map[policy.Protocol]netip.AddrPort{},
		FailureDelay: cfg.Limits.AuthFailureDelay,
		Timeout:      cfg.Limits.LoginTimeout,
		MaxAttempts:  cfg.Limits.MaxLoginAttempts,
	}
	if g.audit != nil {
		d.Audit = g.audit
	}
	for _, b := range cfg.nginxBackends() {
		if ap, err := nginx.ServerFor(b.key, b.opts.Address); err == nil { // validated
			d.Servers[b.proto] = ap
		}
	}
	imap, _ := st.opts.IMAP.(*backend.IMAP)
	d.IMAP = imap
	if n := cfg.Adapters.Nginx; n.Verify == nginx.VerifyDovecotAuth {
		d.DovecotAuth = n.DovecotAuth
		if imap != nil {
			d.DovecotOpts = imap.Opts // timeouts and logger of backends.imap
		}
	}
	return d
}

// startNginxAdapter opens the adapter's listener and serves it until the
// gateway's context ends; wait is done when it has stopped. With the
// adapter off it does nothing.
func (g *gateway) startNginxAdapter(st *state) (wait func(), err error) {
	c := st.cfg.Adapters.Nginx
	if !c.Enabled() {
		return func() {}, nil
	}
	secret, err := adapter.ReadSecret(nginxKey, c.SecretFile)
	if err != nil {
		return nil, err
	}
	ln, err := adapter.Listen(g.ctx, c.Config)
	if err != nil {
		return nil, fmt.Errorf("%s.listen: %w", nginxKey, err)
	}
	log := g.log.With("component", "nginx-adapter")
	m := nginx.NewMetrics(g.ops.reg)
	g.nginx = nginx.New(g.nginxDeps(st), m)
	h := nginx.Protect(adapter.NewSecret(nginx.SecretHeader, secret, log), g.nginx, m)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := adapter.Serve(g.ctx, ln, h, log, adapterGrace); err != nil {
			log.Error("nginx adapter stopped", "err", err)
		}
	}()
	g.log.Info("listening", "listener", nginx.Listener, "proto", "auth_http", "address", c.Listen,
		"verify", orDefault(c.Verify, nginx.VerifyIMAP))
	return func() { <-done }, nil
}

// reloadNginxAdapter hands the new state to the running adapter; its
// listener and secret take effect after a restart, as listeners do.
func (g *gateway) reloadNginxAdapter(old, st *state, log *slog.Logger) {
	o, n := old.cfg.Adapters.Nginx, st.cfg.Adapters.Nginx
	if o.Config != n.Config {
		log.Warn("reload: adapters.nginx listen and secret_file changed; they take effect after a restart")
	}
	if g.nginx != nil {
		g.nginx.Update(g.nginxDeps(st))
	}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// checkNginxSecret reads the adapter's secret file for check-config.
func checkNginxSecret(cfg *Config) error {
	if c := cfg.Adapters.Nginx; c.Enabled() {
		_, err := adapter.ReadSecret(nginxKey, c.SecretFile)
		return err
	}
	return nil
}
