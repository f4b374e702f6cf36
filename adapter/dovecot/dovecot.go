// Package dovecot is mailgate's Dovecot auth_policy server: Dovecot
// (auth_policy_server_url) asks it before each authentication
// (?command=allow) and tells it the outcome after (?command=report), so
// a site where Dovecot faces the clients still gets mailgate's geo
// policy, user exceptions, brute-force guard, log lines and audit.
//
// allow validates every attribute, asks the guard (bans, lockouts,
// reservations; its tarpit becomes status N, which Dovecot waits), then
// the policy, and answers {"status": -1 | 0 | N, "msg": ""}. The message
// stays empty: Dovecot would show it to the client. An allowed attempt
// is parked (park.go) until Dovecot's report says how it ended; then the
// guard counts it, by Dovecot's password hash in a namespace of its own
// (guard.AttemptHashed), and the one AUTHPASS or AUTHFAILED line is
// written as the proxy writes it. Only a report with success true is
// proof of a right password. An allow carries nothing that tells the
// after-auth check (auth_policy_check_after_auth) from a retry of the
// same password in the same session whose report was lost or is late,
// so a second allow for a parked attempt is judged as a new attempt and
// the first ends uncounted, never as a success.
//
// Whatever goes wrong, the answer is HTTP 200 with a status: Dovecot
// (auth-policy.c) takes a status below 0 as a refusal, 0 as "go on" and
// N > 0 as "wait N seconds, then go on", but an HTTP error, a timeout or
// an answer it cannot parse as "no opinion" unless
// auth_policy_reject_on_fail is set. So every refusal of mailgate's,
// including a request without the secret (Protect), with another method
// or an unknown command, gets 200 and -1, never a 4xx or a slow answer:
// a secret rotated on one side only must refuse logins, not switch the
// policy off.
package dovecot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/mailgate/mailgate/adapter"
	"github.com/mailgate/mailgate/audit"
	"github.com/mailgate/mailgate/guard"
	"github.com/mailgate/mailgate/internal/authlimit"
	"github.com/mailgate/mailgate/internal/logfield"
	"github.com/mailgate/mailgate/policy"
)

// SecretHeader carries the shared secret: the header Dovecot sends when
// auth_policy_server_api_header is "X-API-Key:<secret>".
const SecretHeader = "X-API-Key"

// Listener is the listener name on the adapter's log lines and audit rows.
const Listener = "dovecot-policy"

// scheme is the guard's namespace for Dovecot's password hashes.
const scheme = "dovecot"

// Defaults of Config.
const (
	// DefaultLease: Dovecot reports as soon as it has checked the
	// password (before its failure delay), in milliseconds for a local
	// passdb; a report later than the lease is still counted.
	DefaultLease     = 5 * time.Second
	DefaultMaxParked = 10000
	// maxLease bounds the lease: a reservation held longer serves no
	// guard purpose and lets allows without reports hold logins back.
	maxLease = 30 * time.Second
)

// beginWait bounds how long an allow waits for attempts in flight that
// hold its source's budget (guard.Attempt.Begin). Dovecot gives up after
// auth_policy_server_timeout_msecs (2000 by default) and then accepts,
// so every answer must come well before that.
const beginWait = time.Second

// maxDeviceIDLog bounds the client's IMAP ID on a log line, as the
// proxy's client_id.
const maxDeviceIDLog = 128

// Config is the `adapters.dovecot` section.
type Config struct {
	adapter.Config `yaml:",inline"`
	// Lease is how long an allowed attempt waits for its report (after
	// the tarpit Dovecot was told to wait) before it ends as Abandoned
	// and releases its guard reservation; at most maxLease.
	Lease time.Duration `yaml:"lease"`
	// MaxParked bounds the allowed attempts waiting for their report;
	// when full, the source holding the most gives way (park.go).
	MaxParked int `yaml:"max_parked"`
}

// WithDefaults fills the zero keys.
func (c Config) WithDefaults() Config {
	if c.Lease == 0 {
		c.Lease = DefaultLease
	}
	if c.MaxParked == 0 {
		c.MaxParked = DefaultMaxParked
	}
	return c
}

// Validate checks c (with defaults applied); key is "adapters.dovecot".
func (c Config) Validate(key string) error {
	errs := []error{c.Config.Validate(key)}
	if c.Lease < time.Second || c.Lease > maxLease {
		errs = append(errs, fmt.Errorf("%s.lease: %v is not between 1s and %v (Dovecot reports once it has checked the password; a later report is still counted)", key, c.Lease, maxLease))
	}
	if c.MaxParked < 1 || c.MaxParked > 1_000_000 {
		errs = append(errs, fmt.Errorf("%s.max_parked: %d is not between 1 and 1000000", key, c.MaxParked))
	}
	return errors.Join(errs...)
}

// Authorizer decides a login by policy; *policy.Engine satisfies it.
type Authorizer interface {
	Decide(policy.Request) policy.Decision
}

// Auditor records login decisions; *audit.Store satisfies it.
type Auditor interface {
	Record(audit.Event)
}

// Options are the handler's collaborators.
type Options struct {
	Config Config // with defaults applied
	Logger *slog.Logger
	// Guard is the brute-force guard; nil: none.
	Guard *guard.Guard
	// Policy returns the policy in force (it changes on reload).
	Policy func() Authorizer
	// Auditor records every decision; nil: none.
	Auditor Auditor
	// Metrics counts requests; nil: none.
	Metrics *Metrics
	// Now is the clock; nil: time.Now.
	Now func() time.Time
}

// Handler answers Dovecot's auth_policy requests. Wrap it in
// adapter.Secret.Protect.
type Handler struct {
	o    Options
	log  *slog.Logger
	park *parking
	now  func() time.Time
	// badLog bounds the WARN lines for requests Dovecot does not send
	// (another method, an unknown command).
	badLog adapter.LogLimit
}

// refusal is the answer that makes Dovecot refuse the login.
const refusal = `{"status":-1,"msg":""}` + "\n"

// refuse answers -1 with HTTP 200, the refusal Dovecot acts on whatever
// auth_policy_reject_on_fail says.
func refuse(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, refusal)
}

// commandLabel is r's command as a metric label: allow, report or other
// (a bounded set whatever the caller sends).
func commandLabel(r *http.Request) string {
	switch c := r.URL.Query().Get("command"); c {
	case "allow", "report":
		return c
	}
	return "other"
}

// Protect puts h behind the shared secret in force (secret returns it; a
// reload may replace it). A request without it is refused as Dovecot
// reads a refusal, HTTP 200 and -1, logged at most once a minute and
// counted with result "unauthorized": a wrong secret on either side
// refuses every login until it is fixed, it never lets logins through
// unchecked.
func Protect(secret func() *adapter.Secret, h *Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if sec := secret(); !sec.OK(r) {
			sec.LogRefusal(r)
			h.o.Metrics.request(commandLabel(r), "unauthorized")
			refuse(w)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// New returns the handler.
func New(o Options) *Handler {
	o.Config = o.Config.WithDefaults()
	h := &Handler{o: o, log: o.Logger, park: newParking(o.Config.MaxParked), now: o.Now}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.now == nil {
		h.now = time.Now
	}
	return h
}

// Run ends the attempts whose lease is over, every second, until ctx
// ends; then it ends every parked attempt, releasing their reservations.
func (h *Handler) Run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			h.abandon(h.park.expire(time.Now().Add(100*365*24*time.Hour)), "lease")
			return
		case <-t.C:
			h.abandon(h.park.expire(h.now()), "lease")
		}
	}
}

// abandon ends attempts that lost their place without a report.
func (h *Handler) abandon(ps []*parked, reason string) {
	for _, p := range ps {
		p.att.Finish(guard.Abandoned, "")
		h.log.Debug("dovecot policy: allowed attempt ended without its report", "cid", p.cid, "why", reason)
	}
	h.o.Metrics.abandoned(reason, len(ps))
	h.o.Metrics.setParked(h.park.len())
}

// ServeHTTP answers one request: POST ?command=allow or ?command=report.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	cmd := commandLabel(r)
	if r.Method != http.MethodPost || cmd == "other" {
		// Dovecot POSTs allow and report only: this is no Dovecot of
		// ours, or one configured wrong (auth_policy_server_url). -1,
		// which refuses an allow and means nothing to a report.
		result, why := "bad_command", "the command is not allow or report"
		if r.Method != http.MethodPost {
			result, why = "bad_method", "the method is not POST"
		}
		if ok, quiet := h.badLog.Take(); ok {
			h.log.Warn("dovecot policy: request refused: "+why, "listener", Listener,
				"method", logfield.Clean(r.Method, 16), "command", logfield.Clean(r.URL.Query().Get("command"), 32),
				"not_logged_before", quiet)
		}
		h.o.Metrics.request(cmd, result)
		refuse(w)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		body = nil
	}
	req, perr := parseRequest(body, cmd == "report")
	if err != nil {
		perr = fmt.Errorf("reading the body: %w", err)
	}
	status := 0
	if cmd == "allow" {
		status = h.allow(r.Context(), req, perr)
	} else {
		h.report(req, perr)
	}
	w.Header().Set("Content-Type", "application/json")
	// msg stays empty: Dovecot shows it to the client.
	fmt.Fprintf(w, `{"status":%d,"msg":""}`+"\n", status)
}

// attempt is one login as the adapter logs it.
type attempt struct {
	req request
	cid string
	log *slog.Logger
	key parkKey
}

func (h *Handler) newAttempt(req request, cid string) *attempt {
	if cid == "" {
		cid = logfield.NewID()
	}
	remote := ""
	if req.Remote.IsValid() {
		remote = req.Remote.String()
	}
	return &attempt{
		req: req,
		cid: cid,
		log: h.log.With("cid", cid, "proto", string(req.Protocol), "listener", Listener, "remote", remote),
		key: parkKey{login: req.Login, session: req.Session, pwhash: req.PWHash, remote: req.Remote},
	}
}

// allow answers ?command=allow: -1 (refuse), 0 (go on) or N (tarpit N
// seconds, then go on).
func (h *Handler) allow(ctx context.Context, req request, perr error) int {
	if perr != nil && !errors.Is(perr, errBadLogin) {
		h.log.Error("dovecot policy: invalid allow request; refused", "err", perr)
		h.o.Metrics.request("allow", "invalid")
		return -1
	}
	a := h.newAttempt(req, "")
	if perr == nil {
		if p := h.park.take(a.key); p != nil {
			// The same attempt again, before its report: a retry whose
			// report was lost or is late, or Dovecot's after-auth check.
			// Neither is proof of a right password: the first ends
			// uncounted (its reservation freed before this one asks) and
			// this one is judged as any other.
			h.abandon([]*parked{p}, "replaced")
		}
	}
	att := h.o.Guard.AttemptHashed(scheme, req.Login, req.Remote, req.PWHash)
	if perr != nil {
		att.Finish(guard.Refused, "")
		h.decision(ctx, a, "AUTHFAILED", strings.TrimPrefix(perr.Error(), errBadLogin.Error()+": "), policy.Decision{})
		h.o.Metrics.request("allow", "reject")
		return -1
	}
	bctx, cancel := context.WithTimeout(ctx, beginWait)
	v := att.Begin(bctx)
	cancel()
	switch {
	case v.Waited:
		att.Finish(guard.Abandoned, "")
		a.log.Error("guard: waited out attempts in flight", "user", logUser(req.Login), "reason", "guard: "+v.Reason)
		h.auditRow(a, "", "guard: waited out attempts in flight", policy.Decision{})
		h.o.Metrics.request("allow", "reject")
		return -1
	case !v.Allow:
		h.logEvents(ctx, att.Finish(guard.Refused, ""))
		event := "AUTHFAILED"
		if v.Locked {
			event = "AUTHLOCKED"
		}
		h.decision(ctx, a, event, "guard: "+v.Reason, policy.Decision{})
		h.o.Metrics.request("allow", "reject")
		return -1
	}
	var d policy.Decision
	if h.o.Policy != nil {
		if pol := h.o.Policy(); pol != nil {
			d = pol.Decide(policy.Request{Login: req.Login, Protocol: req.Protocol, Addr: req.Remote})
		}
	}
	if !d.Allow {
		if d.Reason == "" {
			d.Reason = "no policy configured"
		}
		h.logEvents(ctx, att.Finish(guard.Refused, d.Location.Country))
		h.decision(ctx, a, "COUNTRYFAILED", d.Reason, d)
		h.o.Metrics.request("allow", "reject")
		return -1
	}
	p := &parked{key: a.key, att: att, d: d, cid: a.cid, expires: h.now().Add(v.Delay + h.o.Config.Lease),
		privileged: h.o.Guard.Privileged(req.Remote)}
	h.put(p)
	status := 0
	if v.Delay > 0 {
		status = int(math.Ceil(v.Delay.Seconds()))
		h.o.Metrics.request("allow", "tarpit")
	} else {
		h.o.Metrics.request("allow", "accept")
	}
	a.log.Debug("dovecot policy: allowed; waiting for the outcome", "user", logUser(req.Login),
		"country", d.Location.Code(), "rule", d.Rule, "tarpit", status)
	return status
}

// put parks p and ends the attempts it displaced, or p itself when the
// table has no room for it.
func (h *Handler) put(p *parked) {
	replaced, evicted, ok := h.park.park(p)
	if replaced != nil {
		h.abandon([]*parked{replaced}, "replaced")
	}
	if !ok {
		evicted = append(evicted, p)
	}
	h.abandon(evicted, "full")
	h.o.Metrics.setParked(h.park.len())
}

// report takes ?command=report: the outcome of an attempt allow saw
// (or did not see: a lost place, auth_policy_check_before_auth = no).
func (h *Handler) report(req request, perr error) {
	if perr != nil {
		if errors.Is(perr, errBadLogin) {
			// allow refused it already and said so.
			h.o.Metrics.request("report", "policy_reject")
			return
		}
		h.log.Error("dovecot policy: invalid report request; ignored", "err", perr)
		h.o.Metrics.request("report", "invalid")
		return
	}
	a := h.newAttempt(req, "")
	p := h.park.take(a.key)
	h.o.Metrics.setParked(h.park.len())
	if p != nil {
		a = h.newAttempt(req, p.cid)
	}
	ctx := context.Background()
	switch {
	case req.PolicyReject:
		// mailgate refused it (allow, or the after-auth allow) and said so.
		if p != nil {
			p.att.Finish(guard.Abandoned, "")
		}
		h.o.Metrics.request("report", "policy_reject")
		return
	}
	var att *guard.Attempt
	var d policy.Decision
	if p != nil {
		att, d = p.att, p.d
	} else {
		att = h.o.Guard.AttemptHashed(scheme, req.Login, req.Remote, req.PWHash)
		if h.o.Policy != nil {
			if pol := h.o.Policy(); pol != nil {
				d = pol.Decide(policy.Request{Login: req.Login, Protocol: req.Protocol, Addr: req.Remote})
			}
		}
	}
	if req.Success {
		evs := att.Finish(guard.Passed, d.Location.Country)
		h.logEvents(ctx, evs)
		reason := d.Reason
		if compromised(evs) {
			// Too late to refuse this login; the lock holds the next.
			reason = "guard: login compromised (reported after the login)"
		}
		h.decision(ctx, a, "AUTHPASS", reason, d)
		h.o.Metrics.request("report", "success")
		return
	}
	h.logEvents(ctx, att.Finish(guard.WrongPassword, ""))
	h.decision(ctx, a, "AUTHFAILED", "backend refused credentials", d)
	h.o.Metrics.request("report", "failure")
}

// decision writes the one line per login decision, as the proxy's
// logDecision: the message is the event, so the fail2ban filters match,
// and the audit row.
func (h *Handler) decision(ctx context.Context, a *attempt, event, reason string, d policy.Decision) {
	level := slog.LevelWarn
	if event == "AUTHPASS" {
		level = slog.LevelInfo
	}
	a.log.Log(ctx, level, event, "event", event, "user", logUser(a.req.Login), "country", d.Location.Code(),
		"country_name", d.Location.Name, "rule", d.Rule, "reason", reason, "mech", "",
		"client_id", logfield.Clean(a.req.DeviceID, maxDeviceIDLog), "session", a.req.Session)
	h.auditRow(a, event, reason, d)
}

// auditRow records a decision as the proxy's audit does (proxy/audit.go).
func (h *Handler) auditRow(a *attempt, event, reason string, d policy.Decision) {
	if h.o.Auditor == nil || !a.req.Remote.IsValid() {
		return
	}
	result, cause := audit.Classify(event, reason, d.Rule)
	h.o.Auditor.Record(audit.Event{
		Time: h.now(), Account: logUser(a.req.Login), Addr: a.req.Remote, Country: d.Location.Code(),
		Protocol: string(a.req.Protocol), Listener: Listener,
		ClientID: logfield.Clean(a.req.DeviceID, maxDeviceIDLog), Result: result, Cause: cause,
	})
}

// logEvents logs the guard's bans, lockouts and compromise signals.
func (h *Handler) logEvents(ctx context.Context, evs []guard.Event) {
	for _, e := range evs {
		e.Log(ctx, h.log)
	}
}

// compromised reports whether evs hold a denying COMPROMISED signal.
func compromised(evs []guard.Event) bool {
	for _, e := range evs {
		if e.Kind == guard.EventCompromised && e.Refuse {
			return true
		}
	}
	return false
}

// logUser is the login as the proxy logs it.
func logUser(s string) string { return logfield.Clean(s, authlimit.MaxUsername) }
