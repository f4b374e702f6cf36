package dovecot

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mailgate/mailgate/audit"
)

// A second allow for a parked attempt is no proof of a right password:
// it is a retry of the same password in the same session whose report
// was lost or is late as much as Dovecot's after-auth check. Only a
// report with success true records a pass (guard, AUTHPASS, audit); an
// allow without one ends uncounted.
func TestSecondAllowIsNoProof(t *testing.T) {
	e := newEnv(t, quiet(), Config{Lease: 5 * time.Second})
	e.h.o.Metrics = NewMetrics(prometheus.NewRegistry())
	b := body("alice@example.test", "192.0.2.61", "S1", "0bad")
	for i := range 3 {
		if s := e.post(t, "allow", b); s != 0 {
			t.Fatalf("allow %d = %d, want 0", i+1, s)
		}
	}
	if strings.Contains(e.log.String(), "AUTHPASS") || len(e.audit.ev) != 0 {
		t.Fatalf("allows without a report recorded a login:\n%s\naudit %+v", e.log.String(), e.audit.ev)
	}
	if n := testutil.ToFloat64(e.h.o.Metrics.ended.WithLabelValues("replaced")); n != 2 {
		t.Errorf("abandoned{replaced} = %v, want 2", n)
	}
	if n := e.h.park.len(); n != 1 {
		t.Errorf("%d parked, want the last allow only", n)
	}
	// The password was wrong after all: the report counts it, once.
	e.report(t, b, false, false)
	if n := strings.Count(e.log.String(), "msg=AUTHFAILED"); n != 1 || strings.Contains(e.log.String(), "AUTHPASS") {
		t.Fatalf("want one AUTHFAILED and no AUTHPASS:\n%s", e.log.String())
	}
	// An allow never reported ends uncounted after its lease.
	b2 := body("alice@example.test", "192.0.2.62", "S2", "0abc")
	e.post(t, "allow", b2)
	e.post(t, "allow", b2)
	e.advance(6 * time.Second)
	e.h.abandon(e.h.park.expire(e.h.now()), "lease")
	if strings.Contains(e.log.String(), "AUTHPASS") || len(e.audit.ev) != 1 || e.audit.ev[0].Result == audit.ResultPass {
		t.Fatalf("an unreported attempt was recorded as a pass:\n%s\naudit %+v", e.log.String(), e.audit.ev)
	}
	// With its report, the right password is a pass, once.
	b3 := body("alice@example.test", "192.0.2.63", "S3", "0abc")
	e.post(t, "allow", b3)
	e.post(t, "allow", b3)
	e.report(t, b3, true, false)
	if n := strings.Count(e.log.String(), "msg=AUTHPASS"); n != 1 || !strings.Contains(e.log.String(), "remote=192.0.2.63 event=AUTHPASS") {
		t.Fatalf("want one AUTHPASS, from the report:\n%s", e.log.String())
	}
}
