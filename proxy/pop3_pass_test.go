package proxy

import "testing"

// TestPOP3PassManySpaces: a password with more spaces than any command
// has arguments is still the whole rest of the PASS line (RFC 1939 7;
// issue #14 finding 7: it got "-ERR Syntax error").
func TestPOP3PassManySpaces(t *testing.T) {
	e := startServer(t, Listener{Protocol: pop3Proto}, fastLimits())
	const pass = "a b c d e f g h i j k"
	e.pop3.mu.Lock()
	e.pop3.users["dave"] = pass
	e.pop3.mu.Unlock()
	c := e.dialPOP3()
	c.send("USER dave\r\nPASS " + pass + "\r\n")
	c.expect("+OK")
	c.expect("+OK Logged in")
}
