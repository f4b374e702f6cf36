package main

import (
	"fmt"

	"github.com/mailgate/mailgate/adapter"
	"github.com/mailgate/mailgate/adapter/dovecot"
)

// dovecotPolicyKey is the config section of Dovecot's auth_policy server.
const dovecotPolicyKey = "adapters.dovecot"

// startDovecotPolicy starts Dovecot's auth_policy server
// (docs/dovecot-policy.md) when adapters.dovecot.listen is set: the
// secret, the listener and the handler, serving until g's context ends.
// Its listener, secret and keys take effect at start; the policy it asks
// follows reloads. g.cur must be stored.
func startDovecotPolicy(g *gateway, cfg *Config) error {
	c := cfg.Adapters.Dovecot
	if !c.Enabled() {
		return nil
	}
	secret, err := adapter.ReadSecret(dovecotPolicyKey, c.SecretFile)
	if err != nil {
		return err
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
	protected := adapter.NewSecret(dovecot.SecretHeader, secret, alog).Protect(h)
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
