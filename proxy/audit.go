package proxy

// The login history (docs/audit.md): every decision logDecision logs, and
// every allowed attempt the backend could not decide, is also handed to
// Options.Auditor, which queues it without blocking.

import (
	"crypto/tls"
	"strings"
	"time"

	"github.com/mailgate/mailgate/audit"
	"github.com/mailgate/mailgate/policy"
)

// Auditor records login decisions; *audit.Store satisfies it. Record
// must not block.
type Auditor interface {
	Record(audit.Event)
}

// audit maps a logged decision (event and reason as logDecision
// gets them, or "" and the message of an unavailable backend) to an
// audit result and cause, and records it.
func (c *conn) audit(event, reason string, d policy.Decision) {
	a := c.srv.options().Auditor
	if a == nil {
		return
	}
	result, cause := audit.ResultUnavailable, reason
	switch {
	case event == "AUTHPASS":
		result, cause = audit.ResultPass, d.Rule
	case event == "COUNTRYFAILED":
		result = audit.ResultDenied
		if d.Rule != "" {
			cause = d.Rule + ": " + reason
		}
	case event == "AUTHLOCKED" || event == "AUTHFAILED" && strings.HasPrefix(reason, "guard: "):
		result, cause = audit.ResultGuard, strings.TrimPrefix(reason, "guard: ")
	case event == "AUTHFAILED" && reason == "backend refused credentials":
		result = audit.ResultFailed
	case event == "AUTHFAILED":
		result = audit.ResultInvalid
	}
	e := audit.Event{
		Time: time.Now(), Account: c.user, Addr: c.remote.Addr(), Country: d.Location.Code(),
		Protocol: string(c.ln.Protocol), Listener: c.ln.Name, Mech: c.mech, ClientID: c.clientID,
		Result: result, Cause: cause,
	}
	if tc, ok := c.nc.(*tls.Conn); ok {
		cs := tc.ConnectionState()
		e.TLS, e.Cipher, e.SNI = tls.VersionName(cs.Version), tls.CipherSuiteName(cs.CipherSuite), cs.ServerName
	}
	a.Record(e)
}
