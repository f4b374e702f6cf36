package proxy

import (
	"strings"
	"testing"
)

// TestSMTPEHLOUTF8: a UTF-8 EHLO name is accepted and handed to the
// backend as A-labels, which it can always send (issue #14 finding 3:
// the backend code refused it after the login decision, 454).
func TestSMTPEHLOUTF8(t *testing.T) {
	e := startServer(t, Listener{Protocol: smtpProto}, smtpLimits())
	c := e.dialSMTP()
	c.ehlo("Bücher.example")
	c.send("AUTH PLAIN " + enc64("\x00alice\x00secret") + "\r\n")
	c.expect("235 2.7.0 Authentication successful")
	if bc := e.smtp.lastClient(); bc.Helo != "xn--bcher-kva.example" || bc.HeloCmd != "EHLO" {
		t.Errorf("backend client EHLO %q %q, want xn--bcher-kva.example EHLO", bc.Helo, bc.HeloCmd)
	}
}

// TestSMTPEHLOGarbage: names that cannot become a sane ASCII name are
// refused at EHLO time with 501, before any login.
func TestSMTPEHLOGarbage(t *testing.T) {
	e := startServer(t, Listener{Protocol: smtpProto}, smtpLimits())
	c := e.dialSMTP()
	for _, name := range []string{"evil\u202eexample", "a\xffb", "ü" + strings.Repeat("a", 250)} {
		c.send("EHLO " + name + "\r\n")
		c.expect("501 5.5.4 Syntax: EHLO hostname")
	}
	c.send("AUTH PLAIN " + enc64("\x00alice\x00secret") + "\r\n")
	c.expect("503 5.5.1 Error: send HELO/EHLO first")
}
