package proxy

// Prometheus metrics of the proxy. cmd creates one *Metrics on its
// registry at start-up and passes the same pointer in every Options it
// gives Server.Update, so counters survive reloads. A nil *Metrics is
// valid and records nothing (tests, the demo).
//
// Label values are bounded enums, never a login or an address:
//
//	listener  configured listener names
//	protocol  imap, pop3, smtp
//	mechanism LOGIN, PLAIN, USER, other
//	result    pass, authfailed, authlocked, countryfailed, unavailable (logins);
//	          allow, deny (decisions); ok, authfailed, error (backend)
//	country   ISO 3166-1 code, a geo label (loopback, private, ...) or unknown
//	rule      the config key or the base name of the rules/user file that decided
//	direction in (client to backend), out (backend to client)

import (
	"errors"
	"path/filepath"
	"strings"
	"time"

	"github.com/mailgate/mailgate/backend"
	"github.com/mailgate/mailgate/policy"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics holds the proxy's collectors. Create it with NewMetrics.
type Metrics struct {
	connections *prometheus.CounterVec   // listener, protocol
	logins      *prometheus.CounterVec   // protocol, mechanism, result, country
	decisions   *prometheus.CounterVec   // result, rule, country
	backendErrs *prometheus.CounterVec   // protocol
	backendTime *prometheus.HistogramVec // protocol, result
	spliced     *prometheus.GaugeVec     // protocol
	bytes       *prometheus.CounterVec   // protocol, direction
	tlsFailures *prometheus.CounterVec   // listener
	refused     *prometheus.CounterVec   // listener
	filtered    *prometheus.CounterVec   // protocol, command
	panics      prometheus.Counter
}

// NewMetrics creates the proxy's metrics and registers them on reg. It
// panics if they are already registered there, as prometheus.MustRegister
// does: call it once per registry.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailgate_connections_total",
			Help: "Accepted client connections by listener.",
		}, []string{"listener", "protocol"}),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailgate_logins_total",
			Help: "Login attempts by protocol, mechanism, result (pass, authfailed, authlocked, countryfailed, unavailable) and client country.",
		}, []string{"protocol", "mechanism", "result", "country"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailgate_policy_decisions_total",
			Help: "Policy decisions by result (allow, deny), deciding rule and country.",
		}, []string{"result", "rule", "country"}),
		backendErrs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailgate_backend_errors_total",
			Help: "Backend logins that failed for a reason other than a refused password (dial, TLS, protocol, timeout).",
		}, []string{"protocol"}),
		backendTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "mailgate_backend_login_duration_seconds",
			Help: "Time to dial and log in to the backend, by result (ok, authfailed, error).",
			// From a local Dovecot (a few ms) to a backend near the login timeout.
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"protocol", "result"}),
		spliced: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mailgate_spliced_sessions",
			Help: "Sessions currently logged in and relaying to the backend.",
		}, []string{"protocol"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailgate_relayed_bytes_total",
			Help: "Octets on the client socket (TLS included) while spliced; in = from the client, out = to the client. Added when a session ends.",
		}, []string{"protocol", "direction"}),
		tlsFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailgate_tls_handshake_failures_total",
			Help: "Failed TLS handshakes (implicit TLS and STARTTLS) by listener.",
		}, []string{"listener"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailgate_guard_refused_connections_total",
			Help: "Connections the brute-force guard refused at accept (ban, deny list, connection limits), by listener; closed before TLS and greeting.",
		}, []string{"listener"}),
		filtered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailgate_commands_refused_after_login_total",
			Help: "Commands a logged-in client sent that mailgate rewrote so the backend refuses them (XCLIENT, XFORWARD, STARTTLS, AUTH, BDAT), by protocol and command.",
		}, []string{"protocol", "command"}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mailgate_session_panics_total",
			Help: "Sessions ended by a recovered panic; anything but 0 is a bug.",
		}),
	}
	reg.MustRegister(m.connections, m.logins, m.decisions, m.backendErrs, m.backendTime,
		m.spliced, m.bytes, m.tlsFailures, m.refused, m.filtered, m.panics)
	return m
}

// Login results, the `result` label of mailgate_logins_total.
const (
	resultPass          = "pass"
	resultAuthFailed    = "authfailed"
	resultCountryFailed = "countryfailed"
	resultUnavailable   = "unavailable"
)

// metrics returns the Metrics of the options in force (possibly nil).
func (c *conn) metrics() *Metrics { return c.srv.options().Metrics }

func (m *Metrics) connOpened(l Listener) {
	if m == nil {
		return
	}
	m.connections.WithLabelValues(l.Name, string(l.Protocol)).Inc()
}

func (m *Metrics) tlsFailed(l Listener) {
	if m == nil {
		return
	}
	m.tlsFailures.WithLabelValues(l.Name).Inc()
}

// refusedAtAccept counts a connection the guard refused before TLS.
func (m *Metrics) refusedAtAccept(l Listener) {
	if m == nil {
		return
	}
	m.refused.WithLabelValues(l.Name).Inc()
}

// refusedAfterLogin counts a command the splice filter rewrote; command
// is one of smtpwire's fixed verbs.
func (m *Metrics) refusedAfterLogin(p policy.Protocol, command string) {
	if m == nil {
		return
	}
	m.filtered.WithLabelValues(string(p), command).Inc()
}

func (m *Metrics) panicked() {
	if m == nil {
		return
	}
	m.panics.Inc()
}

// loginResult counts one login attempt; country is Location.Code().
func (m *Metrics) loginResult(p policy.Protocol, mech, result, country string) {
	if m == nil {
		return
	}
	m.logins.WithLabelValues(string(p), mechLabel(mech), result, countryLabel(country)).Inc()
}

// decision counts one policy decision.
func (m *Metrics) decision(d policy.Decision) {
	if m == nil {
		return
	}
	r := "deny"
	if d.Allow {
		r = "allow"
	}
	m.decisions.WithLabelValues(r, ruleLabel(d.Rule), countryLabel(d.Location.Code())).Inc()
}

// backendLogin records one backend login's duration and, unless it
// succeeded or the password was refused, a backend error.
func (m *Metrics) backendLogin(p policy.Protocol, err error, d time.Duration) {
	if m == nil {
		return
	}
	r := "ok"
	switch {
	case err == nil:
	case errors.Is(err, backend.ErrAuthFailed):
		r = "authfailed"
	default:
		r = "error"
		m.backendErrs.WithLabelValues(string(p)).Inc()
	}
	m.backendTime.WithLabelValues(string(p), r).Observe(d.Seconds())
}

// spliceCounted runs c.splice with the active-session gauge and the
// relayed-byte counters around it; it returns the close reason.
func (c *conn) spliceCounted(sess *backend.Session) string {
	m := c.metrics()
	if m == nil {
		return c.splice(sess)
	}
	p := string(c.ln.Protocol)
	g := m.spliced.WithLabelValues(p)
	g.Inc()
	in0, out0 := c.raw.in.Load(), c.raw.out.Load()
	defer func() {
		g.Dec()
		m.bytes.WithLabelValues(p, "in").Add(float64(c.raw.in.Load() - in0))
		m.bytes.WithLabelValues(p, "out").Add(float64(c.raw.out.Load() - out0))
	}()
	return c.splice(sess)
}

// mechLabel bounds the mechanism label to the names mailgate accepts.
func mechLabel(mech string) string {
	switch mech {
	case "LOGIN", "PLAIN", "USER":
		return mech
	}
	return "other"
}

// countryLabel is the code, or "unknown" for an unplaced address. Codes
// come from the geo database and overrides (two letters or a short
// label), never from the client.
func countryLabel(code string) string {
	if code == "" || len(code) > 32 {
		return "unknown"
	}
	return code
}

// ruleLabel turns "dir/users.txt:12" into "users.txt": the file, not the
// line, so the label set stays as small as the config. Config keys
// ("policy.allow_countries") pass unchanged.
func ruleLabel(rule string) string {
	if rule == "" {
		return "none"
	}
	if i := strings.LastIndexByte(rule, ':'); i >= 0 && isDigits(rule[i+1:]) {
		rule = filepath.Base(rule[:i])
	}
	return rule
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
