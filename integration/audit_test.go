//go:build integration

package integration

// The login history (docs/audit.md) with the real binary, the real
// Dovecot and a real client: Python's imaplib logs in over IMAPS, and
// `mailgate audit` reads the database while mailgate serves.

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// imaplibAudit logs in over implicit TLS from a chosen loopback source
// address, with SNI and an IMAP ID, and prints OK or NO.
const imaplibAudit = `
import imaplib, socket, ssl, sys
src, port, user, password = sys.argv[1:5]

class SourceIMAP4SSL(imaplib.IMAP4_SSL):
    def _create_socket(self, timeout):
        sock = socket.create_connection(("127.0.0.1", self.port), timeout, source_address=(src, 0))
        return self.ssl_context.wrap_socket(sock, server_hostname="mail.example.test")

ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
c = SourceIMAP4SSL(host="127.0.0.1", port=int(port), ssl_context=ctx, timeout=20)
c.xatom("ID", '("name" "pyaudit" "version" "1.0")')
try:
    c.login(user, password)
except imaplib.IMAP4.error:
    print("NO")
    sys.exit(0)
c.logout()
print("OK")
`

// auditSrc is this test's GB address for the wrong password (Dovecot's
// auth penalty is per forwarded address; see badIMAP).
const auditSrc = "127.0.0.24"

func TestAuditHistory(t *testing.T) {
	hs := need(t)
	c := newCfg(t)
	db := filepath.Join(t.TempDir(), "audit.db")
	c.Extra = fmt.Sprintf("audit: {path: %q, batch_interval: 50ms, node: node-a}", db)
	m := startCfg(t, c)
	user := "alice@example.test"
	for _, x := range []struct{ src, pass, want string }{
		{"127.0.0.1", users[user], "OK"}, // GB by override: passes
		{auditSrc, wrongPass, "NO"},      // GB: the backend refuses the password
		{ruLocal, users[user], "NO"},     // RU: denied before the backend
	} {
		out, err := python(t, imaplibAudit, x.src, itoa(c.IMAPS), user, x.pass)
		if err != nil || strings.TrimSpace(out) != x.want {
			t.Fatalf("imaplib from %s: %q, %v; want %s", x.src, out, err, x.want)
		}
	}
	audit := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(hs.mailgateBin, append([]string{"audit", "-config", m.cfgPath}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("mailgate audit %q: %v\n%s", args, err, out)
		}
		return string(out)
	}
	type row struct {
		Result, Cause, Address, Country, Listener, Mechanism, Node string
		ClientID                                                   string `json:"client_id"`
		TLS                                                        string `json:"tls_version"`
		SNI                                                        string `json:"sni"`
		Count                                                      int
	}
	var rows []row
	if !waitFor(func() bool {
		rows = nil
		json.Unmarshal([]byte(audit(user, "--json")), &rows)
		return len(rows) == 3
	}, eventually) {
		t.Fatalf("the history of %s never had 3 rows: %+v", user, rows)
	}
	byResult := map[string]row{}
	for _, r := range rows {
		byResult[r.Result] = r
		if r.Listener != "imaps" || r.ClientID != "pyaudit/1.0" || r.SNI != "mail.example.test" ||
			!strings.HasPrefix(r.TLS, "TLS 1.") || r.Node != "node-a" || r.Count != 1 {
			t.Errorf("row %+v", r)
		}
	}
	if r := byResult["pass"]; r.Address != "127.0.0.1" || r.Country != "GB" {
		t.Errorf("pass row %+v", r)
	}
	if r := byResult["failed"]; r.Address != auditSrc || r.Cause != "backend refused credentials" {
		t.Errorf("failed row %+v", r)
	}
	if r := byResult["denied"]; r.Address != ruLocal || r.Country != "RU" || r.Cause == "" {
		t.Errorf("denied row %+v", r)
	}
	if out := audit("--top", "accounts"); !strings.Contains(out, user+"  2 ") {
		t.Errorf("--top accounts:\n%s", out)
	}
	if out := audit(user, "--failed"); strings.Contains(out, " pass ") || !strings.Contains(out, auditSrc) || !strings.Contains(out, ruLocal) {
		t.Errorf("--failed:\n%s", out)
	}

	// After a SIGHUP reload the same store goes on recording.
	if !m.Reload(t, c.YAML()) {
		t.Fatal("reload refused")
	}
	if out, err := python(t, imaplibAudit, "127.0.0.1", itoa(c.IMAPS), user, users[user]); err != nil || strings.TrimSpace(out) != "OK" {
		t.Fatalf("imaplib after the reload: %q, %v", out, err)
	}
	if !waitFor(func() bool {
		rows = nil
		json.Unmarshal([]byte(audit(user, "--json")), &rows)
		// Summed over rows: rows are per UTC day, and midnight may
		// fall between the two logins.
		passes := 0
		for _, r := range rows {
			if r.Result == "pass" {
				passes += r.Count
			}
		}
		return passes == 2
	}, eventually) {
		t.Errorf("the pass after the reload was not counted: %+v", rows)
	}
}
