package proxy

import (
	"context"
	"errors"
	"testing"

	"github.com/mailgate/mailgate/backend"
)

// downIMAP is a backend that is down: every login ends in an error that
// is no verdict on the password.
type downIMAP struct{}

func (downIMAP) Login(context.Context, backend.Client, string, string, string) (*backend.Session, error) {
	return nil, errors.New("dial tcp 127.0.0.1:143: connection refused")
}

// Attempts that end in a backend error after the decision count against
// their source (issue #14, finding 2), so they cannot be repeated for
// free; trusted networks are not counted.
func TestGuardBackendErrorCountsAgainstSource(t *testing.T) {
	cfg := quietGuard()
	cfg.Ban.IPAfter = 3
	cfg.TrustedNetworks = []string{"198.51.100.0/24"}
	e, g, _ := startGuarded(t, cfg)
	o := *e.srv.options()
	o.IMAP = downIMAP{}
	e.srv.Update(o)
	for _, src := range []string{"203.0.113.60", "198.51.100.60"} {
		c := e.dialFrom(src)
		c.expect("* OK [CAPABILITY")
		for range 3 {
			c.send("a LOGIN alice secret\r\n")
			// An error after the decision is answered as any failure.
			c.expect("a NO [AUTHENTICATIONFAILED]")
		}
		c.nc.Close()
	}
	e.dialFrom("203.0.113.60").expectClosed()
	c := e.dialFrom("198.51.100.60")
	c.expect("* OK [CAPABILITY")
	if b := g.Bans(); len(b) != 1 || b[0].Prefix.String() != "203.0.113.60/32" {
		t.Fatalf("bans %v, want the untrusted source only", b)
	}
}
