package proxy

import (
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/geo"
	"github.com/mailgate/mailgate/internal/testwait"
	"github.com/mailgate/mailgate/policy"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// withMetrics switches e's server to options carrying fresh metrics, the
// way cmd does at start-up, and returns them.
func withMetrics(t *testing.T, e *testEnv) (*Metrics, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	o := *e.srv.options()
	o.Metrics = m
	e.srv.Update(o)
	return m, reg
}

func TestMetricsCountLoginsDecisionsAndSplice(t *testing.T) {
	e := startServer(t, Listener{Name: "imap-test"}, fastLimits())
	m, reg := withMetrics(t, e)
	e.imap.users["bob"] = "right"

	c := e.dialGreeted()
	c.send("a LOGIN alice wrong\r\n")
	c.expect("a NO ")
	c.send("b LOGIN bob right\r\n") // denied by fakeAuth as RU
	c.expect("b NO ")
	c.send("c LOGIN alice secret\r\n")
	c.expect("c OK [CAPABILITY")
	c.send("d NOOP\r\n")
	c.expect("* ECHO d NOOP") // relayed, so the splice has begun
	if got := testutil.ToFloat64(m.spliced.WithLabelValues("imap")); got != 1 {
		t.Errorf("spliced sessions while logged in = %v, want 1", got)
	}
	c.nc.Close()
	testwait.For(t, "session end", func() bool { return e.srv.Sessions() == 0 })

	checks := []struct {
		name string
		c    prometheus.Collector
		want float64
	}{
		{"connections", m.connections.WithLabelValues("imap-test", "imap"), 1},
		{"authfailed", m.logins.WithLabelValues("imap", "LOGIN", "authfailed", "loopback"), 1},
		{"countryfailed", m.logins.WithLabelValues("imap", "LOGIN", "countryfailed", "RU"), 1},
		{"pass", m.logins.WithLabelValues("imap", "LOGIN", "pass", "loopback"), 1},
		{"deny decision", m.decisions.WithLabelValues("deny", "test", "RU"), 1},
		{"allow decisions", m.decisions.WithLabelValues("allow", "test", "loopback"), 2},
		{"spliced after close", m.spliced.WithLabelValues("imap"), 0},
		{"backend errors", m.backendErrs.WithLabelValues("imap"), 0},
	}
	for _, ck := range checks {
		if got := testutil.ToFloat64(ck.c); got != ck.want {
			t.Errorf("%s = %v, want %v", ck.name, got, ck.want)
		}
	}
	if got := testutil.ToFloat64(m.bytes.WithLabelValues("imap", "in")); got < float64(len("d NOOP\r\n")) {
		t.Errorf("relayed bytes in = %v, want at least the NOOP line", got)
	}
	// Two backend logins: one refused password, one success.
	if n := testutil.CollectAndCount(m.backendTime); n != 2 {
		t.Errorf("backend latency series = %d, want 2 (ok, authfailed)", n)
	}
	// No login name, password or address may appear in any series.
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			for _, lp := range mt.GetLabel() {
				for _, bad := range []string{"alice", "bob", "secret", "127.0.0.1"} {
					if strings.Contains(lp.GetValue(), bad) {
						t.Errorf("%s label %s=%q contains %q", mf.GetName(), lp.GetName(), lp.GetValue(), bad)
					}
				}
			}
		}
	}
}

func TestMetricsBackendUnavailable(t *testing.T) {
	e := startServer(t, Listener{}, fastLimits())
	m, _ := withMetrics(t, e)
	e.imap.unavailable = true
	c := e.dialGreeted()
	c.send("a LOGIN alice secret\r\n")
	c.expect("a NO [AUTHENTICATIONFAILED] ") // after the decision: the uniform reply
	if got := testutil.ToFloat64(m.backendErrs.WithLabelValues("imap")); got != 1 {
		t.Errorf("backend errors = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.logins.WithLabelValues("imap", "LOGIN", "unavailable", "loopback")); got != 1 {
		t.Errorf("unavailable logins = %v, want 1", got)
	}
}

func TestMetricsTLSHandshakeFailure(t *testing.T) {
	e := startServer(t, Listener{Name: "imaps", TLS: tlsImplicit}, fastLimits())
	m, _ := withMetrics(t, e)
	c := e.dial()
	c.send("this is not a TLS ClientHello\r\n")
	c.expectClosed()
	testwait.For(t, "handshake failure counted", func() bool {
		return testutil.ToFloat64(m.tlsFailures.WithLabelValues("imaps")) == 1
	})
}

func TestNilMetricsRecordNothing(t *testing.T) {
	var m *Metrics
	m.connOpened(Listener{})
	m.tlsFailed(Listener{})
	m.panicked()
	m.loginResult("imap", "PLAIN", resultPass, "DE")
	m.backendLogin("imap", nil, 0)
}

func TestMetricLabelsAreBounded(t *testing.T) {
	for _, tc := range []struct {
		f        func(string) string
		in, want string
	}{
		{mechLabel, "PLAIN", "PLAIN"},
		{mechLabel, "X-SOMETHING-THE-CLIENT-SENT", "other"},
		{countryLabel, "", "unknown"},
		{countryLabel, "DE", "DE"},
		{ruleLabel, "/etc/mailgate/users.txt:1234", "users.txt"},
		{ruleLabel, "policy.allow_countries", "policy.allow_countries"},
		{ruleLabel, "", "none"},
		{ruleLabel, "rules.yaml:x", "rules.yaml:x"},
	} {
		if got := tc.f(tc.in); got != tc.want {
			t.Errorf("label(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// BenchmarkMetricsLogin is what one login adds for metrics: a decision,
// a backend login observation and the login result.
func BenchmarkMetricsLogin(b *testing.B) {
	m := NewMetrics(prometheus.NewRegistry())
	d := policy.Decision{Allow: true, Rule: "policy.allow_countries", Location: geo.Location{Country: "DE"}}
	b.ReportAllocs()
	for b.Loop() {
		m.decision(d)
		m.backendLogin(policy.IMAP, nil, time.Millisecond)
		m.loginResult(policy.IMAP, "PLAIN", resultPass, "DE")
	}
}
