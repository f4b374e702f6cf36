package main

import (
	"fmt"
	"log/slog"

	"github.com/mailgate/mailgate/adapter"
	"github.com/mailgate/mailgate/adapter/dovecot"
)

// dovecotPolicyKey is the config section of Dovecot's auth_policy server.
const dovecotPolicyKey = "adapters.dovecot"

// dovecotPolicy is the running adapter: its handler and the secret in
// force.
type dovecotPolicy struct {
	h   *dovecot.Handler
	sec *adapter.Secrets
}

// readDovecotSecret reads adapters.dovecot.secret_file when the adapter
// is on: buildState calls it, so a broken secret file stops start-up and
// fails a reload as a broken policy does.
func readDovecotSecret(cfg *Config) (string, error) {
	c := cfg.Adapters.Dovecot
	if !c.Enabled() {
		return "", nil
	}
	return adapter.ReadSecret(dovecotPolicyKey, c.SecretFile)
}

// startDovecotPolicy starts Dovecot's auth_policy server
// (docs/dovecot-policy.md) when adapters.dovecot.listen is set: the
// listener and the handler, serving until g's context ends. Its listener
// takes effect at start; the secret follows reloads
// (reloadDovecotPolicy), and so does the policy it asks. g.cur must be
// stored.
func startDovecotPolicy(g *gateway, st *state) error {
	c := st.cfg.Adapters.Dovecot
	if !c.Enabled() {
		return nil
	}
	ln, err := adapter.Listen(g.ctx, c.Config)
	if err != nil {
		return fmt.Errorf("%s.listen: %w", dovecotPolicyKey, err)
	}
	o := dovecot.Options{
		Config: c,
		// The bare logger: the decision lines must start as the proxy's
		// (msg cid proto listener remote) for the fail2ban filter.
		Logger:  g.log,
		Policy:  func() dovecot.Authorizer { return g.current().pol },
		Metrics: dovecot.NewMetrics(g.ops.reg),
	}
	if g.guard != nil {
		o.Guard = g.guard.g
	}
	if g.audit != nil {
		o.Auditor = g.audit
	}
	h := dovecot.New(o)
	alog := g.log.With("component", dovecotPolicyKey)
	a := &dovecotPolicy{h: h, sec: adapter.NewSecrets(dovecot.SecretHeader, st.dovecotSecret, alog)}
	g.dovecot = a
	protected := dovecot.Protect(a.sec.Current, h)
	// The gateway's stop waits for both before the guard's final save,
	// so reports answered during the grace and the abandoned attempts
	// Run ends are counted in it.
	g.adapters.Go(func() { h.Run(g.ctx) })
	g.adapters.Go(func() {
		if err := adapter.Serve(g.ctx, ln, protected, alog, adapterGrace); err != nil {
			alog.Error("dovecot policy server stopped", "err", err)
		}
	})
	g.dovecotPolicy = ln.Addr()
	g.log.Info("listening", "listener", dovecot.Listener, "address", ln.Addr().String())
	return nil
}

// reloadDovecotPolicy puts the secret of the new state in force when
// secret_file now holds another one (a rotation: Dovecot must send the
// new one from then on), and says which changes wait for a restart.
func (g *gateway) reloadDovecotPolicy(old, st *state, log *slog.Logger) {
	o, n := old.cfg.Adapters.Dovecot, st.cfg.Adapters.Dovecot
	a := g.dovecot
	if o.Listen != n.Listen || (a == nil) != !n.Enabled() {
		log.Warn("reload: adapters.dovecot.listen changed, or the adapter was turned on or off; that takes effect after a restart")
	}
	if a == nil || !n.Enabled() {
		return
	}
	if o.Lease != n.Lease || o.MaxParked != n.MaxParked {
		log.Warn("reload: adapters.dovecot.lease and max_parked take effect after a restart")
	}
	if a.sec.Set(st.dovecotSecret) {
		log.Info("reload: adapters.dovecot uses the new secret from secret_file")
	}
}
