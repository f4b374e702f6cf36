//go:build integration

package backend

import (
	"strings"
	"testing"
	"time"
)

// TestRealRelayProbe runs the check-config relay probe against the real
// Postfix in each configuration mailgate supports: imap mode with XCLIENT
// at a service without SASL (the old setup's port 25: Postfix does not
// count XCLIENT LOGIN= as authenticated there, so it will not relay for a
// foreign client; the probe warns and names the fix), the same at the SASL
// submission service (relays), without XCLIENT (mailgate's own loopback
// address is in mynetworks: relays), and smtp-auth mode (nothing to probe).
func TestRealRelayProbe(t *testing.T) {
	rs := needReal(t)
	imap := &IMAP{Opts: Options{Address: rs.addr(rs.IMAP)}}
	for _, c := range []struct {
		name    string
		port    int
		verify  string
		xclient bool
		warn    bool
	}{
		{"imap+xclient at smtpd without SASL", rs.SMTP, VerifyIMAP, true, true},
		{"imap+xclient at submission with SASL", rs.Submission, VerifyIMAP, true, false},
		{"imap without xclient, mynetworks", rs.SMTP, VerifyIMAP, false, false},
		{"smtp-auth at submission", rs.Submission, VerifySMTPAuth, true, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := &SMTP{
				Opts:   Options{Address: rs.addr(c.port), Logger: testLogger(t), Timeout: 20 * time.Second},
				Verify: c.verify, XCLIENT: c.xclient, Hostname: "mailgate.test", VerifyIMAP: imap,
			}
			warn, err := b.ProbeRelay(withTimeout(t))
			if err != nil {
				t.Fatalf("probe: %v", err)
			}
			if c.warn != (warn != "") {
				t.Fatalf("probe warning %q, want a warning: %v", warn, c.warn)
			}
			if c.warn {
				for _, s := range []string{"Relay access denied", "smtpd_sasl_auth_enable=yes", "permit_sasl_authenticated"} {
					if !strings.Contains(warn, s) {
						t.Errorf("warning lacks %q: %s", s, warn)
					}
				}
			}
		})
	}
	// The probe never sends a message: no delivery line of Postfix's
	// (to=<...>, status=...) names the probe address. The log is shared
	// with the other tests' deliveries, so the check is per line.
	for _, l := range strings.Split(rs.PostfixLog(), "\n") {
		if strings.Contains(l, "relay-probe@example.net") && strings.Contains(l, "status=") {
			t.Errorf("postfix delivered or queued mail for the probe address: %s", l)
		}
	}
}
