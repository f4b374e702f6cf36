//go:build integration

package integration

import (
	"strings"
	"testing"
)

// TestPOP3PoplibUserPass: Python's poplib logs in with USER/PASS through
// mailgate's POP3S listener to the real Dovecot and reads the mailbox.
// PASS now takes the whole rest of the line whatever its spaces (issue
// #14 finding 7, unit test TestPOP3PassManySpaces); this shows a plain
// password still works end to end. The test users' passwords have no
// spaces, so the many-spaces case itself is tested against the proxy's
// POP3 fixture.
func TestPOP3PoplibUserPass(t *testing.T) {
	const user = "alice@example.test"
	resetMailbox(t, user)
	appendDirect(t, user, makeMessage("bob@example.test", user, "poplib user pass", 2000))
	m := startCfg(t, newCfg(t))
	_, port := splitPort(t, m.Addr["pop3s"])
	out, err := python(t, `
import poplib, ssl, sys
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
p = poplib.POP3_SSL("127.0.0.1", int(sys.argv[1]), context=ctx, timeout=60)
p.user(sys.argv[2])
p.pass_(sys.argv[3])
print("stat", p.stat()[0])
p.quit()
`, port, user, users[user])
	if err != nil || strings.TrimSpace(out) != "stat 1" {
		t.Fatalf("poplib: %v\n%s", err, out)
	}
}
