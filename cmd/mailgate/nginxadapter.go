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

// nginxAdapter is the running adapter: its handler, the secret in force
// and the wait for its server to stop.
type nginxAdapter struct {
	h    *nginx.Handler
	sec  *adapter.Secrets
	done chan struct{}
}

// wait returns when the adapter's server has stopped; nil (off) at once.
func (a *nginxAdapter) wait() {
	if a != nil {
		<-a.done
	}
}

// readNginxSecret reads adapters.nginx.secret_file when the adapter is
// on: buildState calls it, so a broken secret file stops start-up and
// fails a reload as a broken policy does.
func readNginxSecret(cfg *Config) (string, error) {
	c := cfg.Adapters.Nginx
	if !c.Enabled() {
		return "", nil
	}
	return adapter.ReadSecret(nginxKey, c.SecretFile)
}

// startNginxAdapter opens the adapter's listener and serves it until the
// gateway's context ends. With the adapter off it does nothing.
func (g *gateway) startNginxAdapter(st *state) error {
	c := st.cfg.Adapters.Nginx
	if !c.Enabled() {
		return nil
	}
	ln, err := adapter.Listen(g.ctx, c.Config)
	if err != nil {
		return fmt.Errorf("%s.listen: %w", nginxKey, err)
	}
	log := g.log.With("component", "nginx-adapter")
	m := nginx.NewMetrics(g.ops.reg)
	a := &nginxAdapter{h: nginx.New(g.nginxDeps(st), m), sec: adapter.NewSecrets(nginx.SecretHeader, st.nginxSecret, log), done: make(chan struct{})}
	g.nginx = a
	h := nginx.Protect(a.sec.Current, a.h, m)
	go func() {
		defer close(a.done)
		if err := adapter.Serve(g.ctx, ln, h, log, adapterGrace); err != nil {
			log.Error("nginx adapter stopped", "err", err)
		}
	}()
	g.log.Info("listening", "listener", nginx.Listener, "proto", "auth_http", "address", c.Listen,
		"verify", orDefault(c.Verify, nginx.VerifyIMAP))
	return nil
}

// reloadNginxAdapter hands the new state to the running adapter, and its
// secret when the file now holds another one (a rotation: nginx must
// send the new one from then on). Its listener takes effect after a
// restart, as listeners do.
func (g *gateway) reloadNginxAdapter(old, st *state, log *slog.Logger) {
	o, n := old.cfg.Adapters.Nginx, st.cfg.Adapters.Nginx
	a := g.nginx
	if o.Listen != n.Listen || (a == nil) != !n.Enabled() {
		log.Warn("reload: adapters.nginx.listen changed, or the adapter was turned on or off; that takes effect after a restart")
	}
	if a == nil || !n.Enabled() {
		return
	}
	a.h.Update(g.nginxDeps(st))
	if a.sec.Set(st.nginxSecret) {
		log.Info("reload: adapters.nginx uses the new secret from secret_file")
	}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
