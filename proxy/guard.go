package proxy

// The brute-force guard's three call points (docs/bruteforce.md): at
// accept, before each backend login, and after it. The guard itself
// lives in proxy/guard; this file is only the glue, so conn.go keeps one
// call per point.

import (
	"context"
	"errors"
	"time"

	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/proxy/guard"
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

// guardCheck asks the guard whether this attempt may reach the backend
// and holds it for the tarpit delay either way, so the delay says nothing
// about the verdict. It returns the refusal reason, or "", and the event
// to log a refusal as: AUTHFAILED, AUTHLOCKED (the login is locked,
// whoever asks: fail2ban must not count it against the address), or ""
// for a wait for attempts in flight that ran out (not a failure: the
// caller must not log it as one).
func (c *conn) guardCheck(user, pass string) (reason, event string) {
	if c.guard == nil {
		return "", ""
	}
	// BeginWait reserves the attempt, so concurrent attempts on other
	// connections cannot all pass before the first failure is counted;
	// an attempt over a threshold only because of attempts in flight
	// waits for them (at most until the login deadline) instead of being
	// refused. The reservation ends with the outcome (guardDenied,
	// guardFailure, guardSuccess, guardBackendError), the connection's
	// next attempt or its close.
	var v guard.Verdict
	if c.gconn != nil {
		ctx, cancel := context.WithDeadline(c.ctx, c.loginDeadline)
		v = c.gconn.BeginWait(ctx, user)
		cancel()
	} else {
		v = c.guard.Check(user, c.remote.Addr())
	}
	c.sleep(v.Delay)
	if v.Allow && c.ctx.Err() == nil && time.Now().Before(c.loginDeadline) {
		return "", ""
	}
	c.guardEndAttempt()
	if v.Waited {
		// Not a failure: the attempts it waited for were in flight.
		return "guard: " + v.Reason, ""
	}
	if !v.Allow {
		c.guardDenied(user, pass)
		if v.Locked {
			return "guard: " + v.Reason, "AUTHLOCKED"
		}
		return "guard: " + v.Reason, "AUTHFAILED"
	}
	return "guard: tarpit outlasted the login deadline", "AUTHFAILED"
}

// guardFailureDelay is the least time a failed attempt from this source
// takes: base plus the backend's penalty for the source's recent
// failures (docs/bruteforce.md), read before the outcome is known so a
// wrong password and a refusal end at the same time.
func (c *conn) guardFailureDelay(base time.Duration) time.Duration {
	if c.guard == nil {
		return base
	}
	return c.guard.FailureDelay(c.remote.Addr(), base)
}

// guardBackendError counts an attempt that ended in a backend error or
// timeout after the decision against its source (not the login's
// lockout), so it cannot be repeated for free; trusted and proven
// sources are not counted. It ends the attempt's reservation.
func (c *conn) guardBackendError(user string) {
	if c.guard != nil {
		c.logGuardEvents(c.guard.BackendError(user, c.remote.Addr()))
	}
	c.guardEndAttempt()
}

// sleep waits d, at most until the login deadline or the session's end.
func (c *conn) sleep(d time.Duration) {
	d = min(d, time.Until(c.loginDeadline))
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-c.ctx.Done():
	}
}

// guardDenied counts an attempt refused for any cause but a wrong
// password (bad credentials, policy, the guard itself) against the source.
func (c *conn) guardDenied(user, pass string) {
	if c.guard != nil {
		c.logGuardEvents(c.guard.Denied(user, c.remote.Addr(), pass))
	}
	c.guardEndAttempt()
}

// guardEndAttempt releases the attempt reserved by guardCheck, after its
// outcome is counted: counting it both in flight and failed for a moment
// errs on the safe side, never the reverse.
func (c *conn) guardEndAttempt() {
	if c.gconn != nil {
		c.gconn.EndAttempt()
	}
}

// guardFailure counts a wrong password and returns the fingerprint
// attribute for the AUTHFAILED line (none without a configured secret).
func (c *conn) guardFailure(user, pass string) []any {
	if c.guard == nil {
		return nil
	}
	c.logGuardEvents(c.guard.Failure(user, c.remote.Addr(), pass))
	c.guardEndAttempt()
	if fp := c.guard.Fingerprint(pass); fp != "" {
		return []any{"pwfp", fp}
	}
	return nil
}

// guardSuccess records a successful login. It reports whether the login
// raised a denying COMPROMISED signal, in which case the session that
// raised it must be dropped rather than spliced.
func (c *conn) guardSuccess(user string, d policy.Decision) (refuse bool) {
	if c.guard == nil {
		return false
	}
	evs := c.guard.Success(user, c.remote.Addr(), d.Location.Country)
	c.guardEndAttempt()
	c.logGuardEvents(evs)
	for _, e := range evs {
		if e.Kind == guard.EventCompromised && e.Refuse {
			refuse = true
		}
	}
	return refuse
}

// guardBackendSlot waits for a backend login slot. ok is false when none
// came in time; the client then gets the temporary error.
func (c *conn) guardBackendSlot(ctx context.Context) (release func(), ok bool) {
	if c.guard == nil {
		return func() {}, true
	}
	release, err := c.guard.BackendSlotFor(ctx, c.remote.Addr())
	if err != nil {
		// The attempt never reached the backend: its reservation must
		// not keep the source's other attempts waiting.
		c.guardEndAttempt()
		if errors.Is(err, guard.ErrBackendBusy) {
			c.log.Warn("backend login slots busy; temporary failure", "user", c.user, "err", err)
		}
		return nil, false
	}
	return release, true
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
