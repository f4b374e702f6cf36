//go:build integration

package integration

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
)

// reportDropper stands between Dovecot and mailgate's adapter and, while
// drop is set, loses Dovecot's reports, as a timeout or a restart of
// mailgate does: Dovecot sends a report once and ignores its answer.
type reportDropper struct {
	addr    string
	drop    atomic.Bool
	dropped atomic.Int32
}

// startReportDropper relays to target on a loopback listener of its own
// until the test ends.
func startReportDropper(t *testing.T, target string) *reportDropper {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &reportDropper{addr: ln.Addr().String()}
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: target})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("command") == "report" && d.drop.Load() {
			d.dropped.Add(1)
			return // 200, no body: what Dovecot gets for any report
		}
		rp.ServeHTTP(w, r)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return d
}

// twoLoginsScript sends LOGIN twice on one IMAP connection from a given
// source address and prints OK or NO for each.
const twoLoginsScript = `
import imaplib, socket, sys
host, port, src, user, pw1, pw2 = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
class C(imaplib.IMAP4):
    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout, source_address=(src, 0))
c = C(host, port, timeout=60)
out = []
for pw in (pw1, pw2):
    try:
        c.login(user, pw)
        out.append("OK")
        break
    except imaplib.IMAP4.error:
        out.append("NO")
print(" ".join(out))
`

// TestDovecotPolicyLostReports (clients from 127.0.0.24-26, GB by the
// harness's geo overrides): only Dovecot's report with success true
// records a login. With the real Dovecot and the settings of
// docs/dovecot-policy.md, and Dovecot's reports lost on the way: a
// client that sends the same wrong password twice in one session makes
// Dovecot ask allow twice for the same attempt, and that is no AUTHPASS,
// no audit row and no exemption; a right password whose report is lost
// passes Dovecot but is not logged as a login either; once reports
// arrive again, the right password is an AUTHPASS.
func TestDovecotPolicyLostReports(t *testing.T) {
	var relay *reportDropper
	p := startPolicyStackVia(t, "guard:\n  failure_penalty: {init: 0s}\n", func(target string) string {
		relay = startReportDropper(t, target)
		return relay.addr
	})
	const user, pass = "alice@example.test", "alicepass"
	relay.drop.Store(true)

	const retry = "127.0.0.24"
	out, err := python(t, twoLoginsScript, "127.0.0.1", fmt.Sprint(p.dovecot.IMAP), retry, user, wrongPass, wrongPass)
	if err != nil || strings.TrimSpace(out) != "NO NO" {
		t.Fatalf("the same wrong password twice: %q, %v; want NO NO", out, err)
	}
	// Two reports sent: both allows were answered.
	if !waitFor(func() bool { return relay.dropped.Load() >= 2 }, eventually) {
		t.Fatalf("Dovecot sent %d reports, want 2", relay.dropped.Load())
	}
	if hasLine(p.m.Log(), "AUTHPASS", "remote="+retry) {
		t.Fatalf("a wrong password asked about twice was logged as a login:\n%s", p.m.Log())
	}

	const lost = "127.0.0.25"
	if ok, _, text := p.login(t, lost, user, pass); !ok {
		t.Fatalf("right password, report lost: refused (%s)", text)
	}
	if !waitFor(func() bool { return relay.dropped.Load() >= 3 }, eventually) {
		t.Fatalf("Dovecot sent %d reports, want 3", relay.dropped.Load())
	}
	if hasLine(p.m.Log(), "AUTHPASS", "remote="+lost) {
		t.Fatalf("a login whose report was lost was logged AUTHPASS (from the allow alone):\n%s", p.m.Log())
	}

	relay.drop.Store(false)
	const good = "127.0.0.26"
	if ok, _, text := p.login(t, good, user, pass); !ok {
		t.Fatalf("right password: refused (%s)", text)
	}
	if !waitFor(func() bool { return hasLine(p.m.Log(), "msg=AUTHPASS", "remote="+good+" event=AUTHPASS") }, eventually) {
		t.Fatalf("no AUTHPASS from the report:\n%s", p.m.Log())
	}
	if hasLine(p.m.Log(), "AUTHPASS", "remote="+retry) || hasLine(p.m.Log(), "AUTHPASS", "remote="+lost) {
		t.Fatalf("AUTHPASS for an attempt without a successful report:\n%s", p.m.Log())
	}
}
