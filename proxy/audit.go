package proxy

// The login history (docs/audit.md): every decision logDecision logs, and
// every allowed attempt the backend could not decide, is also handed to
// Options.Auditor, which queues it without blocking.

import (
	"crypto/tls"
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
	result, cause := audit.Classify(event, reason, d.Rule)
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
