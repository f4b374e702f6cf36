// Package nginx answers nginx's mail auth_http requests
// (ngx_mail_auth_http_module) with mailgate's policy, guard and audit, as
// the PHP script of the classic nginx `mail {}` setup did: nginx keeps
// the client connections, TLS and the splice; mailgate decides each login
// and tells nginx where to send it (docs/nginx-adapter.md).
//
// One request is one login attempt, judged in the proxy's order
// (proxy/login.go): the credentials are checked, the guard asked
// (Attempt, Begin, its tarpit), the policy decides, a backend login slot
// is taken and the password verified (an IMAP login and LOGOUT, or
// Dovecot's auth socket), then the one exit records the outcome: the
// guard's Finish, one log line (AUTHPASS, AUTHFAILED, AUTHLOCKED,
// COUNTRYFAILED with the proxy's fields, so the same fail2ban filters
// and legacy syslog lines match), one metric and the audit row.
//
// Every refusal gets the same answer at the same moment: Auth-Status
// "Invalid login or password (id …)", Auth-Error-Code "535 5.7.8" for
// SMTP, held until the request's start (after the tarpit) plus the
// failure delay, then Auth-Wait: 1 so nginx lets the client try again,
// until Auth-Login-Attempt reaches the attempts limit, when Auth-Wait is
// left out and nginx closes the session. The tarpit and the failure
// delay are served by holding the answer, not by Auth-Wait: the tarpit
// applies to allowed attempts too (Auth-Wait exists only on a failure),
// and Auth-Wait counts whole seconds, too coarse to hide a backend's
// answer time.
package nginx

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mailgate/mailgate/adapter"
	"github.com/mailgate/mailgate/audit"
	"github.com/mailgate/mailgate/backend"
	"github.com/mailgate/mailgate/guard"
	"github.com/mailgate/mailgate/internal/authlimit"
	"github.com/mailgate/mailgate/internal/logfield"
	"github.com/mailgate/mailgate/policy"
)

// SecretHeader carries the shared secret: nginx sends it with
// `auth_http_header X-Mailgate-Secret "<secret>";`.
const SecretHeader = "X-Mailgate-Secret"

// Listener is the listener name on log lines and audit rows, where the
// proxy writes its listener's name.
const Listener = "nginx"

// Answers nginx passes on to the client (IMAP "NO ...", POP3 "-ERR ...",
// SMTP "<Auth-Error-Code> ...").
const (
	failedStatus = "Invalid login or password"
	tempStatus   = "Temporary server problem, try again later"
	smtpFailed   = "535 5.7.8"
	smtpTemp     = "451 4.3.0"
)

// Verify modes.
const (
	VerifyIMAP        = "imap"
	VerifyDovecotAuth = backend.VerifyDovecotAuth
)

// Config is the `adapters.nginx` section.
type Config struct {
	adapter.Config `yaml:",inline"`
	// Verify is how a password is checked: "imap" (default: an IMAP
	// login to backends.imap and LOGOUT) or "dovecot-auth" (Dovecot's
	// auth socket, DovecotAuth).
	Verify string `yaml:"verify"`
	// DovecotAuth is Dovecot's auth socket for verify: dovecot-auth: an
	// absolute path or host:port.
	DovecotAuth string `yaml:"dovecot_auth"`
}

// Validate checks the section; key is its path ("adapters.nginx").
func (c Config) Validate(key string) error {
	if !c.Enabled() {
		return nil
	}
	errs := []error{c.Config.Validate(key)}
	switch c.Verify {
	case "", VerifyIMAP:
		if c.DovecotAuth != "" {
			errs = append(errs, errors.New(key+".dovecot_auth: set, but verify is not dovecot-auth"))
		}
	case VerifyDovecotAuth:
		if _, _, err := backend.DovecotAuthNetwork(c.DovecotAuth); err != nil {
			errs = append(errs, errors.New(key+".dovecot_auth: verify: dovecot-auth needs the auth socket: "+err.Error()))
		}
	default:
		errs = append(errs, errors.New(key+".verify: "+strconv.Quote(c.Verify)+" is not one of imap, dovecot-auth"))
	}
	return errors.Join(errs...)
}

// ServerFor returns the Auth-Server and Auth-Port nginx is sent to for
// a backend address: nginx takes only an IP literal and a port. key
// names the backend for the message ("backends.imap").
func ServerFor(key, address string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(address)
	if err != nil || ap.Port() == 0 {
		return netip.AddrPort{}, errors.New(key + ".address: " + strconv.Quote(address) +
			" must be an IP address and port while adapters.nginx is on: nginx's Auth-Server takes no host name")
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// Decider is the policy; *policy.Engine satisfies it.
type Decider interface {
	Decide(policy.Request) policy.Decision
}

// Auditor records login decisions without blocking; *audit.Store
// satisfies it.
type Auditor interface {
	Record(audit.Event)
}

// Deps are what a request is judged with. cmd builds them from the
// config and swaps them in on reload (Handler.Update); they are not
// changed once handed over.
type Deps struct {
	Logger *slog.Logger
	Policy Decider
	Guard  *guard.Guard // nil: no guard
	Audit  Auditor      // nil: no audit
	// Servers are the backends nginx is sent to, by protocol; a protocol
	// without one is refused as unavailable.
	Servers map[policy.Protocol]netip.AddrPort
	// IMAP verifies passwords in imap mode.
	IMAP *backend.IMAP
	// DovecotAuth, with DovecotOpts' timeouts, verifies them in
	// dovecot-auth mode when set.
	DovecotAuth string
	DovecotOpts backend.Options
	// FailureDelay is limits.auth_failure_delay: the least time a
	// refusal takes (plus the guard's penalty for the source).
	FailureDelay time.Duration
	// Timeout bounds one decision (limits.login_timeout): the guard's
	// waits and the password check.
	Timeout time.Duration
	// MaxAttempts is limits.max_login_attempts: the attempt that reaches
	// it is answered without Auth-Wait, and nginx closes the session.
	MaxAttempts int
}

// Handler serves auth_http requests. Serve it behind Protect.
type Handler struct {
	deps    atomic.Pointer[Deps]
	metrics *Metrics
	// unsupported bounds the WARN lines for an Auth-Method without a
	// password, as adapter.Secret bounds its own: every login of an
	// nginx configured so is refused, and must not flood the log.
	unsupported adapter.LogLimit
	// sleep waits until t or ctx's end; tests replace it.
	sleep func(ctx context.Context, t time.Time)
}

// New returns a handler judging with d; m may be nil.
func New(d *Deps, m *Metrics) *Handler {
	h := &Handler{metrics: m, sleep: sleepUntil}
	h.deps.Store(d)
	return h
}

// Update makes new requests use d (a reload); requests in flight finish
// with the Deps they started with.
func (h *Handler) Update(d *Deps) { h.deps.Store(d) }

// outcome is how one attempt ended; finish records it.
type outcome struct {
	result string // metric label: pass, authfailed, authlocked, countryfailed, unavailable
	// event is the decision line (AUTHPASS, AUTHFAILED, AUTHLOCKED,
	// COUNTRYFAILED); "" for an attempt no one judged, logged at error
	// level as msg.
	event, reason, msg string
	attrs              []any
	d                  policy.Decision
	guard              guard.Outcome
}

func refusal(event, reason string, d policy.Decision) outcome {
	return outcome{result: strings.ToLower(event), event: event, reason: reason, d: d, guard: guard.Refused}
}

func unjudged(msg string, d policy.Decision, g guard.Outcome, attrs ...any) outcome {
	return outcome{result: "unavailable", msg: msg, d: d, guard: g, attrs: attrs}
}

// session is one request being judged.
type session struct {
	h       *Handler
	d       *Deps
	r       request
	cid     string
	user    string // sanitized, for logs and the audit
	log     *slog.Logger
	ctx     context.Context
	attempt *guard.Attempt
}

// Protect puts h behind the shared secret secret returns (the one in
// force: a reload may change it) and counts the requests refused for it.
func Protect(secret func() *adapter.Secret, h http.Handler, m *Metrics) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if sec := secret(); !sec.OK(r) {
			m.Unauthorized()
			sec.Refuse(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, hr *http.Request) {
	begin := time.Now()
	start := begin
	d := h.deps.Load()
	if hr.Method != http.MethodGet {
		// nginx asks with GET only.
		http.Error(w, "auth_http requests are GET", http.StatusMethodNotAllowed)
		return
	}
	r, err := parseRequest(hr.Header)
	if err != nil {
		h.badRequest(w, d, r, err, start)
		return
	}
	ctx := hr.Context()
	if d.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d.Timeout)
		defer cancel()
	}
	s := &session{h: h, d: d, r: r, cid: logfield.NewID(), ctx: ctx,
		user: logfield.Clean(r.user, authlimit.MaxUsername)}
	s.log = d.Logger.With("cid", s.cid, "proto", string(r.proto), "listener", Listener, "remote", r.clientIP.String())
	s.attempt = d.Guard.Attempt(r.user, r.clientIP, r.pass)
	defer s.attempt.Finish(guard.Abandoned, "") // a panic: nothing counted
	floor := s.failureFloor()
	out := s.judge(&start, &floor)
	pass := s.finish(out)
	if pass {
		srv := d.Servers[r.proto]
		w.Header().Set("Auth-Status", "OK")
		w.Header().Set("Auth-Server", srv.Addr().String())
		w.Header().Set("Auth-Port", strconv.Itoa(int(srv.Port())))
		h.metrics.request(string(r.proto), out.result, time.Since(begin))
		return
	}
	h.sleep(hr.Context(), start.Add(floor))
	h.metrics.request(string(r.proto), out.result, time.Since(begin))
	w.Header().Set("Auth-Status", failedStatus+" (id "+s.cid+")")
	if r.proto == policy.SMTP {
		w.Header().Set("Auth-Error-Code", smtpFailed)
	}
	if d.MaxAttempts <= 0 || r.attempt < d.MaxAttempts {
		w.Header().Set("Auth-Wait", "1")
	}
}

// badRequest answers a request nginx would not send, or one whose
// method cannot be verified: no decision, no guard, a clear log line.
func (h *Handler) badRequest(w http.ResponseWriter, d *Deps, r request, err error, start time.Time) {
	status, result, text := http.StatusBadRequest, "bad_request", tempStatus
	if errors.Is(err, errUnsupportedMethod) {
		// nginx offers a mechanism mailgate cannot check: a config
		// mistake of the nginx side, answered like a wrong password.
		status, result, text = http.StatusOK, "unsupported", failedStatus
		if ok, quiet := h.unsupported.Take(); ok {
			d.Logger.Warn("nginx auth request refused: only plain and login carry a password mailgate can check; set imap_auth, pop3_auth and smtp_auth to plain/login",
				"listener", Listener, "err", err, "not_logged_before", quiet)
		}
	} else {
		d.Logger.Warn("nginx auth request refused: malformed", "listener", Listener, "err", err)
	}
	h.metrics.request(string(r.proto), result, time.Since(start))
	w.Header().Set("Auth-Status", text)
	if r.proto == policy.SMTP {
		code := smtpTemp
		if status == http.StatusOK {
			code = smtpFailed
		}
		w.Header().Set("Auth-Error-Code", code)
	}
	w.WriteHeader(status)
}

// judge runs the steps of one attempt in the proxy's order and returns
// how it ended. *start moves past the tarpit and *floor is read again
// there, so a wrong password and a refusal end at the same time.
func (s *session) judge(start *time.Time, floor *time.Duration) outcome {
	if reason := authlimit.Check(s.r.user, s.r.pass); reason != "" {
		return refusal("AUTHFAILED", reason, policy.Decision{})
	}
	v := s.attempt.Begin(s.ctx)
	s.h.sleep(s.ctx, time.Now().Add(v.Delay))
	*start, *floor = time.Now(), s.failureFloor()
	switch {
	case v.Allow && s.ctx.Err() == nil:
	case v.Waited:
		// Not a failure, so not AUTHFAILED: fail2ban counts those.
		return unjudged("guard: waited out attempts in flight", policy.Decision{}, guard.Abandoned, "reason", "guard: "+v.Reason)
	case !v.Allow && v.Locked:
		return refusal("AUTHLOCKED", "guard: "+v.Reason, policy.Decision{})
	case !v.Allow:
		return refusal("AUTHFAILED", "guard: "+v.Reason, policy.Decision{})
	default:
		out := refusal("AUTHFAILED", "guard: tarpit outlasted the decision timeout", policy.Decision{})
		out.guard = guard.Abandoned
		return out
	}
	if s.d.Policy == nil {
		return unjudged("no policy configured; refusing login", policy.Decision{}, guard.Abandoned)
	}
	d := s.d.Policy.Decide(policy.Request{Login: s.r.user, Protocol: s.r.proto, Addr: s.r.clientIP})
	if !d.Allow {
		out := refusal("COUNTRYFAILED", d.Reason, d)
		return out
	}
	if _, ok := s.d.Servers[s.r.proto]; !ok {
		return unjudged("no backend for the protocol", d, guard.Abandoned)
	}
	release := func() {}
	if s.d.Guard != nil {
		var err error
		if release, err = s.d.Guard.BackendSlotFor(s.ctx, s.r.clientIP); err != nil {
			return unjudged("no backend login slot", d, guard.Abandoned, "err", err)
		}
	}
	err := s.verify()
	release()
	switch {
	case err == nil:
		return outcome{result: "pass", event: "AUTHPASS", reason: d.Reason, d: d, guard: guard.Passed}
	case errors.Is(err, backend.ErrAuthFailed):
		out := refusal("AUTHFAILED", "backend refused credentials", d)
		out.guard = guard.WrongPassword
		return out
	}
	return unjudged("backend unavailable", d, guard.BackendError, "err", err)
}

// verify checks the password as configured.
func (s *session) verify() error {
	c := backend.Client{Addr: netip.AddrPortFrom(s.r.clientIP, 0), Session: s.cid}
	if s.d.DovecotAuth != "" {
		return backend.VerifyDovecotAuthSocket(s.ctx, s.d.DovecotOpts, s.d.DovecotAuth, string(s.r.proto), c, s.r.user, s.r.pass)
	}
	if s.d.IMAP == nil {
		return errors.New("no IMAP backend to verify passwords with")
	}
	return s.d.IMAP.Verify(s.ctx, c, s.r.user, s.r.pass)
}

// finish is the one exit: the guard's record (a denying compromise
// signal turns a pass into a refusal), the one log line and the audit
// row. It reports whether the login passed.
func (s *session) finish(out outcome) bool {
	if out.guard == guard.WrongPassword {
		if fp := s.attempt.Fingerprint(); fp != "" {
			out.attrs = append(out.attrs, "pwfp", fp)
		}
	}
	evs := s.attempt.Finish(out.guard, out.d.Location.Country)
	for _, e := range evs {
		e.Log(s.ctx, s.d.Logger)
		if out.result == "pass" && e.Kind == guard.EventCompromised && e.Refuse {
			out.result, out.event, out.reason = "authfailed", "AUTHFAILED", "guard: login compromised"
		}
	}
	if out.event != "" {
		level := slog.LevelWarn
		if out.event == "AUTHPASS" {
			level = slog.LevelInfo
		}
		// The proxy's fields in the proxy's order (proxy/login.go,
		// logDecision): the fail2ban filters read them.
		s.log.Log(s.ctx, level, out.event, append([]any{"event", out.event, "user", s.user,
			"country", out.d.Location.Code(), "country_name", out.d.Location.Name, "rule", out.d.Rule,
			"reason", out.reason, "mech", s.r.mech(), "client_id", ""}, out.attrs...)...)
	} else {
		s.log.Error(out.msg, append([]any{"user", s.user, "mech", s.r.mech()}, out.attrs...)...)
	}
	if s.d.Audit != nil {
		why := out.reason
		if out.event == "" {
			why = out.msg
		}
		result, cause := audit.Classify(out.event, why, out.d.Rule)
		s.d.Audit.Record(audit.Event{Time: time.Now(), Account: s.user, Addr: s.r.clientIP,
			Country: out.d.Location.Code(), Protocol: string(s.r.proto), Listener: Listener,
			Mech: s.r.mech(), Result: result, Cause: cause})
	}
	return out.result == "pass"
}

// failureFloor is the least time a refusal from this source takes:
// limits.auth_failure_delay plus the guard's penalty for its recent
// failures, as in the proxy.
func (s *session) failureFloor() time.Duration {
	if s.d.Guard == nil {
		return s.d.FailureDelay
	}
	return s.d.Guard.FailureDelay(s.r.clientIP, s.d.FailureDelay)
}

// sleepUntil waits until t, or until ctx ends.
func sleepUntil(ctx context.Context, t time.Time) {
	wait := time.Until(t)
	if wait <= 0 {
		return
	}
	tm := time.NewTimer(wait)
	defer tm.Stop()
	select {
	case <-tm.C:
	case <-ctx.Done():
	}
}
