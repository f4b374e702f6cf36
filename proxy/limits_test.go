package proxy

import (
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/proxy/internal/imapwire"
	"github.com/mailgate/mailgate/proxy/internal/pop3wire"
	"github.com/mailgate/mailgate/proxy/internal/smtpwire"
)

func TestLimitsDefaultsAndValidate(t *testing.T) {
	d := Limits{}.WithDefaults()
	if d.AuthFailureDelay != DefaultAuthFailureDelay || d.IdleTimeout != 30*time.Minute || d.MaxLoginAttempts != DefaultMaxLoginAttempts ||
		d.MaxErrors != DefaultMaxErrors || d.MaxCommands != DefaultMaxCommands || d.PreAuthIdleTimeout != DefaultPreAuthIdleTimeout ||
		d.LoginTimeout != DefaultLoginTimeout || d.TLSHandshakeTimeout != DefaultTLSHandshakeTimeout {
		t.Errorf("WithDefaults() = %+v", d)
	}
	if got := (Limits{MaxErrors: 2}).WithDefaults().MaxErrors; got != 2 {
		t.Errorf("WithDefaults overrode a set value: %d", got)
	}
	if err := (Limits{}).Validate(); err != nil {
		t.Errorf("zero Limits: %v", err)
	}
	err := Limits{MaxErrors: -1, IdleTimeout: -time.Second, AuthFailureDelay: time.Hour}.Validate()
	if err == nil {
		t.Fatal("Validate accepted negative values")
	}
	for _, key := range []string{"limits.max_errors", "limits.idle_timeout", "limits.auth_failure_delay"} {
		if !strings.Contains(err.Error(), key) {
			t.Errorf("Validate error %q lacks %s", err, key)
		}
	}
	if err := (Limits{PreAuthIdleTimeout: time.Hour, LoginTimeout: time.Minute}).Validate(); err == nil ||
		!strings.Contains(err.Error(), "limits.preauth_idle_timeout") {
		t.Errorf("idle longer than login timeout: %v", err)
	}
}

func TestLiteralTooBig(t *testing.T) {
	e := startServer(t, Listener{}, fastLimits())
	c := e.dialGreeted()
	// Synchronizing: refused before the client sends it; session goes on.
	c.send("a LOGIN {4097}\r\n")
	c.expect("a BAD Literal too big")
	c.send("b NOOP\r\n")
	c.expect("b OK")
	// Non-synchronizing: already on the wire; BAD and BYE.
	c.send("c LOGIN {5000+}\r\n" + strings.Repeat("x", 100))
	c.expect("c BAD Literal too big")
	c.expect("* BYE Literal too big")
	c.expectClosed()
	// More literals than a command may have arguments.
	c = e.dialGreeted()
	c.send("d ID (" + strings.Repeat("{0+}\r\n ", imapwire.MaxArgs+1) + ")\r\n")
	c.expect("d BAD Literal too big")
	c.expect("* BYE Literal too big")
	c.expectClosed()
	if n := len(e.auth.requests()); n != 0 {
		t.Errorf("%d decisions", n)
	}
}

// A literal announced but never sent is bounded by the idle timeout
// (the timeouts themselves are in TestLimitsEndSessions).
func TestLiteralNeverSentIsBounded(t *testing.T) {
	lim := fastLimits()
	lim.PreAuthIdleTimeout = 50 * time.Millisecond
	e := startServer(t, Listener{}, lim)
	c := e.dialGreeted()
	c.send("a LOGIN {5}\r\n")
	c.expect("+ ")
	c.expect("* BYE Autologout")
	c.expectClosed()
}

// The shared read buffer holds the longest line any protocol reads (the
// SASL limit comes from one place, sasl.MaxLine).
func TestReadBufferHoldsEveryLine(t *testing.T) {
	for _, n := range []int{maxSASLLine, imapwire.MaxLine, pop3wire.MaxLine, smtpwire.MaxLine} {
		if n > readBufferSize {
			t.Errorf("read buffer %d cannot hold a %d-octet line", readBufferSize, n)
		}
	}
}
