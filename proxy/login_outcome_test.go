package proxy

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/geo"
	"github.com/mailgate/mailgate/guard"
	"github.com/mailgate/mailgate/internal/testwait"
	"github.com/mailgate/mailgate/policy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// countryAuth allows every login and places it in the country that
// country names, so a test can move a user between countries.
type countryAuth struct{ country *string }

func (a countryAuth) Decide(r policy.Request) policy.Decision {
	if r.Login == "bob" {
		return policy.Decision{Allow: false, Rule: "test:1", Reason: "country RU not allowed",
			Location: geo.Location{Country: "RU", Name: "Russia"}}
	}
	return policy.Decision{Allow: true, Rule: "test:2", Reason: "allowed",
		Location: geo.Location{Country: *a.country, Name: *a.country}}
}

// loginRecordLine matches the one line c.endLogin writes per attempt:
// a decision line, or the error line of an attempt no one judged.
var loginRecordLine = regexp.MustCompile(`msg=(AUTHPASS|AUTHFAILED|COUNTRYFAILED|"no authorizer configured; refusing login"|"backend down; not tried"|"no backend login slot"|"backend unavailable") `)

// loginsCounted sums mailgate_logins_total over every series.
func loginsCounted(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n float64
	for _, mf := range mfs {
		if mf.GetName() == "mailgate_logins_total" {
			for _, m := range mf.GetMetric() {
				n += m.GetCounter().GetValue()
			}
		}
	}
	return n
}

// Every way a login attempt can end is recorded once: one increment of
// mailgate_logins_total with the right result, one log line of the right
// kind (issue #15: one path recorded no metric, and the records were
// spread over seven returns).
func TestLoginEveryOutcomeRecordedOnce(t *testing.T) {
	cfg := quietGuard()
	cfg.Lockout.PerIPAfter = 1
	cfg.Compromise = guard.CompromiseConfig{Countries: 1, Window: time.Hour, Deny: true}
	cfg.Backend = guard.BackendConfig{MaxConcurrent: 1, Queue: 1, QueueWait: 50 * time.Millisecond}
	e, _, ci := startGuarded(t, cfg)
	country := "DE"
	o := *e.srv.options()
	o.Authorizer = countryAuth{&country}
	e.srv.Update(o)
	m, reg := withMetrics(t, e)

	c := e.dialFrom("203.0.113.70")
	c.expect("* OK [CAPABILITY")
	lines := func() int { return len(loginRecordLine.FindAllString(e.logs.String(), -1)) }
	step := 0
	try := func(name, cmd, reply, result, country, logged string, prepare func()) {
		t.Helper()
		step++
		if prepare != nil {
			prepare()
		}
		n0, l0 := loginsCounted(t, reg), lines()
		r0 := m.logins.WithLabelValues("imap", "LOGIN", result, countryLabel(country))
		v0 := testutil.ToFloat64(r0)
		tag := string(rune('a' + step))
		c.send(tag + " " + cmd + "\r\n")
		c.expect(tag + " " + reply)
		if d := loginsCounted(t, reg) - n0; d != 1 {
			t.Errorf("%s: %v login metric increments, want 1", name, d)
		}
		if d := testutil.ToFloat64(r0) - v0; d != 1 {
			t.Errorf("%s: result %q/%q counted %v times, want 1", name, result, country, d)
		}
		all := loginRecordLine.FindAllString(e.logs.String(), -1)
		if d := len(all) - l0; d != 1 {
			t.Errorf("%s: %d login log lines, want 1", name, d)
		} else if !strings.Contains(all[len(all)-1], logged) {
			t.Errorf("%s: log line %q, want %q", name, all[len(all)-1], logged)
		}
	}
	const failed, unavail = "NO [AUTHENTICATIONFAILED]", "NO [UNAVAILABLE]"
	try("unusable credentials", `LOGIN alice ""`, failed, resultAuthFailed, "", "AUTHFAILED", nil)
	try("wrong password", "LOGIN carol wrong", failed, resultAuthFailed, "DE", "AUTHFAILED", nil)
	try("guard refusal", "LOGIN carol wrong2", failed, resultAuthFailed, "", "AUTHFAILED", nil)
	try("policy denial", "LOGIN bob secret", failed, resultCountryFailed, "RU", "COUNTRYFAILED", nil)
	try("pass", "LOGIN alice secret", "OK", resultPass, "DE", "AUTHPASS", nil)

	// The pass spliced c; the rest runs on new connections.
	c = e.dialFrom("203.0.113.71")
	c.expect("* OK [CAPABILITY")
	try("compromise signal", "LOGIN alice secret", failed, resultAuthFailed, "FR", "AUTHFAILED", func() { country = "FR" })
	country = "DE"
	try("backend error", "LOGIN dave secret", failed, resultUnavailable, "DE", "backend unavailable", func() { e.imap.unavailable = true })
	try("backend known down", "LOGIN dave secret", unavail, resultUnavailable, "DE", "backend down; not tried", nil)
	e.imap.unavailable = false
	e.srv.health.of(policy.IMAP).markUp()

	// A login holds the only backend slot, so the next finds none.
	ci.hold = make(chan struct{})
	first := e.dialFrom("203.0.113.72")
	first.expect("* OK [CAPABILITY")
	calls := ci.calls.Load()
	first.send("x LOGIN erin secret\r\n")
	testwait.For(t, "first login at the backend", func() bool { return ci.calls.Load() > calls })
	try("no backend slot", "LOGIN erin secret", failed, resultUnavailable, "DE", "no backend login slot", nil)
	close(ci.hold)
	first.expect("x NO [AUTHENTICATIONFAILED]") // erin has no password in the fake

	o = *e.srv.options()
	o.Authorizer = nil
	e.srv.Update(o)
	try("no authorizer", "LOGIN frank secret", unavail, resultUnavailable, "", "no authorizer configured", nil)
}

// An attempt that ends without a backend verdict releases its guard
// reservation at once, not when its connection closes: before issue #15
// the no-authorizer exit kept it, and the same login from the same
// address on another connection waited for it until its login deadline.
func TestLoginAttemptReleasedOnEveryExit(t *testing.T) {
	cfg := quietGuard()
	cfg.Lockout.PerIPAfter = 1 // one attempt per (login, address) in flight
	e, _, _ := startGuarded(t, cfg)
	e.imap.users["frank"] = "secret"
	o := *e.srv.options()
	auth := o.Authorizer
	o.Authorizer = nil
	o.Limits.LoginTimeout = 3 * time.Second
	e.srv.Update(o)

	first := e.dialFrom("203.0.113.80")
	first.expect("* OK [CAPABILITY")
	first.send("a LOGIN frank secret\r\n")
	first.expect("a NO [UNAVAILABLE]") // the connection stays open

	o = *e.srv.options()
	o.Authorizer = auth
	e.srv.Update(o)
	second := e.dialFrom("203.0.113.80")
	second.expect("* OK [CAPABILITY")
	second.send("b LOGIN frank secret\r\n")
	second.expect("b OK")
	if strings.Contains(e.logs.String(), "attempts in flight") {
		t.Error("the second attempt waited for the first one's reservation")
	}
}

// A guard refusal reads the source's failure floor before the refusal is
// counted, like a wrong password does (docs/bruteforce.md: "read before
// the outcome is known"), so from sources with the same recent failures
// both end at the same time. Before, the refusal was counted first and
// took one penalty step longer: here 2 s against 1 s.
func TestGuardRefusalEndsWithWrongPassword(t *testing.T) {
	cfg := quietGuard()
	cfg.Lockout.PerIPAfter = 1
	cfg.FailurePenalty = guard.PenaltyConfig{Init: 500 * time.Millisecond, Max: 8 * time.Second}
	e, _, _ := startGuarded(t, cfg)
	timed := func(c *client, tag, cmd string) time.Duration {
		start := time.Now()
		c.send(tag + " " + cmd + "\r\n")
		c.expect(tag + " NO [AUTHENTICATIONFAILED]")
		return time.Since(start)
	}
	wrong := e.dialFrom("203.0.113.90")
	wrong.expect("* OK [CAPABILITY")
	refused := e.dialFrom("203.0.113.91")
	refused.expect("* OK [CAPABILITY")
	timed(wrong, "a", "LOGIN dave wrong") // one recent failure each
	timed(refused, "a", "LOGIN carol wrong")
	tw := timed(wrong, "b", "LOGIN erin wrong")     // a wrong password
	tr := timed(refused, "b", "LOGIN carol wrong2") // lockout.per_ip_after
	if !strings.Contains(e.logs.String(), "guard: ") {
		t.Fatal("the second attempt of carol was not refused by the guard")
	}
	// Both are padded to 1 s; one more penalty step would be 2 s.
	if d := (tr - tw).Abs(); d > 500*time.Millisecond {
		t.Errorf("guard refusal took %v, wrong password %v: not the same failure floor", tr, tw)
	}
}
