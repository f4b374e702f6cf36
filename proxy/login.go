package proxy

// One login attempt, the same in every protocol: the steps that judge it
// (credentials, guard, policy, backend slot, backend login, compromise
// signal) and the one exit that records its outcome. A protocol collects
// a loginAttempt (its LOGIN/USER+PASS command or a SASL exchange,
// authflow.go) and calls c.loginAndAnswer, which answers in its words.
//
// The steps only produce a loginOutcome; c.endLogin alone acts on it:
// the guard's record (Attempt.Finish), the one log line (AUTHPASS,
// AUTHFAILED, COUNTRYFAILED, or an error line when no one judged the
// password), the one metric, and the failure delay. So every path is
// recorded exactly once, as mox records its authentication result once.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/mailgate/mailgate/backend"
	"github.com/mailgate/mailgate/guard"
	"github.com/mailgate/mailgate/internal/authlimit"
	"github.com/mailgate/mailgate/policy"
)

// loginReply is what the client is told about one login attempt.
type loginReply int

const (
	loginPassed      loginReply = iota // spliceable session returned
	loginFailed                        // generic failure reply, same for every cause
	loginUnavailable                   // backend known down before the decision: temporary failure reply
)

// loginAttempt is what a protocol collected from the client.
type loginAttempt struct {
	mech    string // "LOGIN" (IMAP command), "PLAIN", "LOGIN" (SASL), "USER" ...
	authzid string // SASL authorization identity; empty or equal to user
	user    string
	pass    string // never logged
}

// dialFunc logs in to the protocol's backend with the options in force
// for this attempt.
type dialFunc func(ctx context.Context, o *Options, bc backend.Client, user, pass string) (*backend.Session, error)

// loginOutcome is how one attempt ended, as the steps of c.login found
// it; c.endLogin records it.
type loginOutcome struct {
	// result is the metric's result label: resultPass,
	// resultAuthFailed, resultCountryFailed or resultUnavailable.
	result string
	// event is the decision line's message (AUTHPASS, AUTHFAILED,
	// COUNTRYFAILED); "" for an attempt no one judged, logged at error
	// level as msg.
	event, reason string
	msg           string
	attrs         []any // extra log attributes (the backend's error)
	d             policy.Decision
	guard         guard.Outcome
	sess          *backend.Session // the spliceable session (resultPass)
	// unavailable: answer with the temporary failure whatever the
	// backend's health (no authorizer configured).
	unavailable bool
}

// refused is an attempt refused before the backend for reason: event
// is AUTHFAILED or COUNTRYFAILED.
func refused(event, reason string, d policy.Decision) loginOutcome {
	return loginOutcome{result: strings.ToLower(event), event: event, reason: reason, d: d, guard: guard.Refused}
}

// unjudged is an attempt that ended before anyone judged the password,
// logged as msg; it counts against no one unless g says so.
func unjudged(msg string, d policy.Decision, g guard.Outcome, attrs ...any) loginOutcome {
	return loginOutcome{result: resultUnavailable, msg: msg, d: d, guard: g, attrs: attrs}
}

// login runs one attempt: validate, decide, then log in to the backend,
// and records it (c.endLogin). Denials and refused passwords return
// loginFailed at the same moment (attempt start, after any tarpit, +
// the failure delay) so neither reply nor timing tells them apart; only
// the log does.
//
// After an allowing decision nothing may fail differently: no backend
// slot, a backend error or timeout get the same reply at the same moment
// as a wrong password. The temporary-failure reply (loginUnavailable)
// depends only on what is known before the decision, that the backend is
// down (health.go), and then every attempt gets it, also after the delay.
func (c *conn) login(a loginAttempt, dial dialFunc) (*backend.Session, loginReply) {
	start := time.Now()
	o := c.srv.options() // new attempts use reloaded options
	c.attempts++
	c.mech = a.mech
	c.user = sanitizeLog(a.user, maxLoginName)
	health := c.srv.health.of(c.ln.Protocol)
	down := health.down()
	// The connection owns the attempt until endLogin finishes it; its
	// close finishes one left unfinished (a panic) as Abandoned.
	c.attempt = c.guard.Attempt(a.user, c.remote.Addr(), a.pass)
	floor := c.failureFloor(o)
	out := c.judge(o, a, dial, health, down, &start, &floor)
	return c.endLogin(o, out, start, floor, down)
}

// judge runs the steps of one attempt and returns how it ended. It only
// decides; c.endLogin records. *start moves past the tarpit, and *floor
// is read again there: before any outcome is recorded, so a wrong
// password and a refusal end at the same time.
func (c *conn) judge(o *Options, a loginAttempt, dial dialFunc, health *backendHealth, down bool, start *time.Time, floor *time.Duration) loginOutcome {
	if reason := checkCredentials(a); reason != "" {
		return refused("AUTHFAILED", reason, policy.Decision{})
	}
	reason, event, counted := c.guardCheck()
	// The failure delay counts from after the tarpit, whatever the
	// verdict, so a tarpitted wrong password (tarpit + backend) and a
	// refusal (tarpit alone) still end at the same time.
	*start, *floor = time.Now(), c.failureFloor(o)
	switch {
	case reason != "" && event == "":
		// A wait for attempts in flight that ran out is no failure, so it
		// is not logged as AUTHFAILED either: fail2ban counts every
		// AUTHFAILED line (docs/bruteforce.md).
		return unjudged("guard: waited out attempts in flight", policy.Decision{}, guard.Abandoned, "reason", reason)
	case reason != "":
		out := refused(event, reason, policy.Decision{})
		if !counted {
			out.guard = guard.Abandoned
		}
		return out
	}
	if o.Authorizer == nil {
		out := unjudged("no authorizer configured; refusing login", policy.Decision{}, guard.Abandoned)
		out.unavailable = true
		return out
	}
	d := o.Authorizer.Decide(policy.Request{Login: a.user, Protocol: c.ln.Protocol, Addr: c.remote.Addr()})
	o.Metrics.decision(d)
	if !d.Allow {
		return refused("COUNTRYFAILED", d.Reason, d)
	}
	if down {
		return unjudged("backend down; not tried", d, guard.Abandoned)
	}
	ctx, cancel := context.WithDeadline(c.ctx, c.loginDeadline)
	defer cancel()
	release, ok := c.guardBackendSlot(ctx)
	if !ok {
		// The attempt never reached the backend: its reservation must
		// not keep the source's other attempts waiting.
		return unjudged("no backend login slot", d, guard.Abandoned)
	}
	bc := backend.Client{Addr: c.remote, Local: c.local, Session: c.cid}
	if tc, ok := c.nc.(*tls.Conn); ok {
		cs := tc.ConnectionState()
		bc.TLS = &cs // PROXY v2's TLS facts for the backend
	}
	dialStart := time.Now()
	sess, err := dial(ctx, o, bc, a.user, a.pass)
	release()
	o.Metrics.backendLogin(c.ln.Protocol, err, time.Since(dialStart))
	switch {
	case err == nil && sess != nil && sess.Conn != nil:
		health.markUp()
		return loginOutcome{result: resultPass, event: "AUTHPASS", reason: d.Reason, d: d, guard: guard.Passed, sess: sess}
	case errors.Is(err, backend.ErrAuthFailed):
		health.markUp()
		out := refused("AUTHFAILED", "backend refused credentials", d)
		out.guard = guard.WrongPassword
		return out
	}
	if err == nil {
		err = errors.New("backend returned no session")
		if sess != nil && sess.Conn != nil {
			sess.Conn.Close()
		}
	}
	// ctx, not c.ctx: an attempt cut by the client's own login deadline
	// (which the client times) says nothing about the backend.
	if errors.Is(err, backend.ErrNoService) && ctx.Err() == nil {
		health.markDown()
	}
	return unjudged("backend unavailable", d, guard.BackendError, "err", err)
}

// endLogin is the one exit of a login attempt: it finishes the guard's
// attempt (a denying compromise signal turns a pass into a refusal and
// drops the session), writes the one log line, counts the one metric,
// and holds every failure until start plus floor. down says the backend
// was known down before the decision.
func (c *conn) endLogin(o *Options, out loginOutcome, start time.Time, floor time.Duration, down bool) (*backend.Session, loginReply) {
	if out.guard == guard.WrongPassword {
		// Read before Finish forgets the password.
		if fp := c.attempt.Fingerprint(); fp != "" {
			out.attrs = append(out.attrs, "pwfp", fp)
		}
	}
	evs := c.attempt.Finish(out.guard, out.d.Location.Country)
	c.attempt = nil
	c.logGuardEvents(evs)
	if out.result == resultPass && compromised(evs) {
		out.sess.Conn.Close()
		out.sess = nil
		out.result, out.event, out.reason = resultAuthFailed, "AUTHFAILED", "guard: login compromised"
	}
	if out.event != "" {
		c.logDecision(out.event, out.reason, out.d, out.attrs...)
		c.audit(out.event, out.reason, out.d)
	} else {
		c.log.Error(out.msg, append([]any{"user", c.user, "mech", c.mech}, out.attrs...)...)
		c.audit("", out.msg, out.d)
	}
	o.Metrics.loginResult(c.ln.Protocol, c.mech, out.result, out.d.Location.Code())
	if out.result == resultPass {
		c.guardLoggedIn()
		return out.sess, loginPassed
	}
	c.failureDelay(start, floor)
	if down || out.unavailable {
		return nil, loginUnavailable
	}
	return nil, loginFailed
}

// compromised reports whether evs hold a denying COMPROMISED signal: the
// session that raised it must be dropped rather than spliced.
func compromised(evs []guard.Event) bool {
	for _, e := range evs {
		if e.Kind == guard.EventCompromised && e.Refuse {
			return true
		}
	}
	return false
}

// guardCheck asks the guard whether this attempt may reach the backend
// and holds it for the tarpit delay either way, so the delay says nothing
// about the verdict. It returns the refusal reason, or ""; the event to
// log a refusal as: AUTHFAILED, AUTHLOCKED (the login is locked, whoever
// asks: fail2ban must not count it against the address, or the owner's
// own retries of her correct password would ban her), or "" for a wait
// for attempts in flight that ran out (no failure); and whether the
// refusal counts against the source: a wait that ran out, or a tarpit
// that outlasted the login deadline, does not.
func (c *conn) guardCheck() (reason, event string, counted bool) {
	if c.attempt == nil {
		return "", "", false
	}
	// Begin reserves the attempt, so concurrent attempts on other
	// connections cannot all pass before the first failure is counted;
	// an attempt over a threshold only because of attempts in flight
	// waits for them (at most until the login deadline) instead of being
	// refused.
	ctx, cancel := context.WithDeadline(c.ctx, c.loginDeadline)
	v := c.attempt.Begin(ctx)
	cancel()
	c.sleep(v.Delay)
	switch {
	case v.Allow && c.ctx.Err() == nil && time.Now().Before(c.loginDeadline):
		return "", "", false
	case v.Waited:
		// Not a failure: the attempts it waited for were in flight.
		return "guard: " + v.Reason, "", false
	case !v.Allow && v.Locked:
		return "guard: " + v.Reason, "AUTHLOCKED", true
	case !v.Allow:
		return "guard: " + v.Reason, "AUTHFAILED", true
	}
	return "guard: tarpit outlasted the login deadline", "AUTHFAILED", false
}

// failureFloor is the least time a failed attempt from this source
// takes: AuthFailureDelay plus the backend's penalty for the source's
// recent failures (docs/bruteforce.md), the same for every cause.
func (c *conn) failureFloor(o *Options) time.Duration {
	if c.guard == nil {
		return o.Limits.AuthFailureDelay
	}
	return c.guard.FailureDelay(c.remote.Addr(), o.Limits.AuthFailureDelay)
}

// guardBackendSlot waits for a backend login slot. ok is false when none
// came in time; the client then gets the temporary error.
func (c *conn) guardBackendSlot(ctx context.Context) (release func(), ok bool) {
	if c.guard == nil {
		return func() {}, true
	}
	release, err := c.guard.BackendSlotFor(ctx, c.remote.Addr())
	if err != nil {
		if errors.Is(err, guard.ErrBackendBusy) {
			c.log.Warn("backend login slots busy; temporary failure", "user", c.user, "err", err)
		}
		return nil, false
	}
	return release, true
}

// checkCredentials returns why a login cannot be used, or "". Names and
// passwords with CR, LF or NUL could inject a command into a backend.
func checkCredentials(a loginAttempt) string {
	if reason := authlimit.Check(a.user, a.pass); reason != "" {
		return reason
	}
	if a.authzid != "" && a.authzid != a.user {
		return "authorization identity differs from login name"
	}
	return ""
}

// sleep waits d, at most until the login deadline or the session's end.
func (c *conn) sleep(d time.Duration) {
	c.failureDelay(time.Now(), min(d, time.Until(c.loginDeadline)))
}

// failureDelay waits until start+d, or until shutdown.
func (c *conn) failureDelay(start time.Time, d time.Duration) {
	wait := time.Until(start.Add(d))
	if wait <= 0 {
		return
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-c.ctx.Done():
	}
}

// logDecision writes the one line per login decision. The message is the
// event name so fail2ban filters written for the old auth_http script
// (AUTHPASS, AUTHFAILED, COUNTRYFAILED) still match.
func (c *conn) logDecision(event, reason string, d policy.Decision, attrs ...any) {
	level := slog.LevelWarn
	if event == "AUTHPASS" {
		level = slog.LevelInfo
	}
	c.log.Log(c.ctx, level, event, append([]any{"event", event, "user", c.user, "country", d.Location.Code(),
		"country_name", d.Location.Name, "rule", d.Rule, "reason", reason, "mech", c.mech,
		"client_id", c.clientID}, attrs...)...)
}

// loginReplies are one protocol's answers to the outcomes of c.login.
type loginReplies struct {
	// passed writes the success reply (IMAP and POP3: the backend's own
	// line; SMTP: 235).
	passed func(sess *backend.Session) error
	// failed is the one reply for every refusal (wrong password, denied
	// place, unusable credentials) and unavailable the one for a backend
	// outage; both end with the session id for support.
	failed, unavailable string
}

// loginAndAnswer runs c.login and answers in the protocol's words. It
// returns the session to splice, or nil and nil to go on reading
// commands, or an error that ends the session (errTooManyAttempts after
// the last allowed failure).
func (c *conn) loginAndAnswer(a loginAttempt, dial dialFunc, r loginReplies) (*backend.Session, error) {
	sess, reply := c.login(a, dial)
	line := r.failed
	switch reply {
	case loginPassed:
		// Listed as live before the client hears the OK, so that what the
		// client saw is on the console's live sessions page.
		c.publishLive()
		if err := r.passed(sess); err != nil {
			sess.Conn.Close()
			return nil, err
		}
		return sess, nil
	case loginUnavailable:
		line = r.unavailable
	}
	if err := c.writeLine(fmt.Sprintf("%s (id %s)", line, c.cid)); err != nil {
		return nil, err
	}
	if !c.attemptsLeft() {
		return nil, errTooManyAttempts
	}
	return nil, nil
}
