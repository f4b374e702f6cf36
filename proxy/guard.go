package proxy

// The brute-force guard at accept and close (docs/bruteforce.md); a
// login attempt's question and record are in login.go. The guard itself
// is the package guard.

import (
	"github.com/mailgate/mailgate/guard"
)

// guardAccept admits the connection with the guard, after a PROXY
// header and before TLS. Without a PROXY header the accept loop asks the
// guard instead (Server.admit), before this connection exists. A refused source is closed without a handshake
// or greeting: answering would cost the CPU the refusal is meant to save.
func (c *conn) guardAccept() error {
	if c.guard == nil || c.guardDone {
		return nil // no guard, or the accept loop already asked it
	}
	gc, err := c.guard.Accept(c.remote.Addr())
	if err != nil {
		c.metrics().refusedAtAccept(c.ln)
		c.log.Info("connection refused by guard", "err", err)
		return err
	}
	c.gconn = gc
	return nil
}

// guardClose releases the connection's place in the guard's counts.
func (c *conn) guardClose() {
	if c.gconn != nil {
		c.gconn.Close()
	}
}

// guardLoggedIn moves the connection out of the pre-auth counts.
func (c *conn) guardLoggedIn() {
	if c.gconn != nil {
		c.gconn.LoggedIn()
	}
}

// logGuardEvents writes bans, lockouts and compromise signals on the
// server's base logger: they concern a source or a login, not a session.
func (c *conn) logGuardEvents(evs []guard.Event) {
	if len(evs) == 0 {
		return
	}
	log := c.srv.options().Logger
	for _, e := range evs {
		e.Log(c.ctx, log)
	}
}
