package main

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/audit"
)

// auditDB writes a small history into a real database file.
func auditDB(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.db")
	st, err := audit.Open(audit.Config{Path: path}, audit.Options{Node: "mx1"})
	if err != nil {
		t.Fatal(err)
	}
	// Rows aggregate per UTC day, and the command's --since (24h for
	// --top) counts back from the real clock, so the recent events must
	// fall within the last 24 hours and on one UTC day at any hour the
	// test runs. They hang from ref, 1 to 3 hours before it: now when
	// today is 4 hours old, else 23:00 yesterday. (Hung from now, the two
	// RU denials straddled midnight between 01:00 and 02:00 UTC; from
	// yesterday's noon, they left --top's 24 hours after 11:00 UTC.)
	now := time.Now().UTC()
	ref := now.Truncate(24 * time.Hour).Add(-time.Hour)
	if now.Sub(now.Truncate(24*time.Hour)) >= 4*time.Hour {
		ref = now
	}
	for _, e := range []audit.Event{
		{Time: ref.Add(-3 * time.Hour), Account: "alice@example.com", Addr: netip.MustParseAddr("81.2.69.142"), Country: "GB",
			Protocol: "imap", Listener: "imaps", Mech: "PLAIN", ClientID: "Thunderbird/128.1", TLS: "TLS 1.3",
			Cipher: "TLS_AES_128_GCM_SHA256", SNI: "mail.example.com", Result: audit.ResultPass, Cause: "policy.allow_countries"},
		{Time: ref.Add(-2 * time.Hour), Account: "Alice@Example.com", Addr: netip.MustParseAddr("77.88.55.88"), Country: "RU",
			Protocol: "smtp", Listener: "submission", Mech: "LOGIN", Result: audit.ResultDenied, Cause: "policy.allow_countries: country RU not allowed"},
		{Time: ref.Add(-time.Hour), Account: "alice@example.com", Addr: netip.MustParseAddr("77.88.55.88"), Country: "RU",
			Protocol: "smtp", Listener: "submission", Mech: "LOGIN", Result: audit.ResultDenied, Cause: "policy.allow_countries: country RU not allowed"},
		{Time: ref.Add(-10 * 24 * time.Hour), Account: "alice@example.com", Addr: netip.MustParseAddr("1.2.4.8"), Country: "CN",
			Protocol: "imap", Listener: "imaps", Mech: "PLAIN", Result: audit.ResultFailed, Cause: "backend refused credentials"},
		{Time: ref.Add(-time.Hour), Account: "bob@example.com", Addr: netip.MustParseAddr("1.2.4.8"), Country: "CN",
			Protocol: "imap", Listener: "imaps", Mech: "PLAIN", Result: audit.ResultGuard, Cause: "address banned"},
	} {
		st.Record(e)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func runCmd(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, strings.NewReader(""), &out, &errb)
	return out.String(), errb.String(), code
}

func TestAuditCommandText(t *testing.T) {
	db := auditDB(t)
	out, errs, code := runCmd(t, "audit", "ALICE@example.com", "-db", db)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 {
		t.Fatalf("want a title, a header and 2 rows (7d), got:\n%s", out)
	}
	if !strings.HasPrefix(lines[0], "alice@example.com since ") {
		t.Errorf("title %q", lines[0])
	}
	head := strings.Fields(lines[1])
	for _, w := range []string{"RESULT", "CAUSE", "ADDRESS", "COUNTRY", "CLIENT", "TLS", "SNI", "NODE"} {
		if !strings.Contains(lines[1], w) {
			t.Errorf("header %q lacks %s", lines[1], w)
		}
	}
	// Newest first: the denied row (count 2, last at 11:00 yesterday), then the pass.
	denied, pass := strings.Fields(lines[2]), strings.Fields(lines[3])
	// LAST SEEN and FIRST SEEN are two words each, in head and rows;
	// CAUSE, the last column, may have spaces.
	if len(denied) < len(head) || len(pass) != len(head) {
		t.Errorf("rows do not have one word per column:\n%s", out)
	}
	if denied[4] != "2" || denied[5] != "denied" || denied[6] != "77.88.55.88" || !strings.HasSuffix(lines[2], "  policy.allow_countries: country RU not allowed") {
		t.Errorf("first row %q, want the two RU denials", lines[2])
	}
	if !strings.Contains(lines[3], "pass") || !strings.Contains(lines[3], "Thunderbird/128.1") ||
		!strings.Contains(lines[3], "TLS_1.3") || !strings.Contains(lines[3], "mail.example.com") || !strings.Contains(lines[3], "mx1") {
		t.Errorf("second row %q, want the pass with client, TLS, SNI and node", lines[3])
	}

	out, _, _ = runCmd(t, "audit", "-db", db, "--since", "30d", "--failed", "alice@example.com")
	if strings.Contains(out, "pass") || !strings.Contains(out, "1.2.4.8") || strings.Count(out, "\n") != 4 {
		t.Errorf("--failed --since 30d:\n%s", out)
	}
	out, _, code = runCmd(t, "audit", "-db", db, "nobody")
	if code != 0 || !strings.HasPrefix(out, "no logins of nobody since ") {
		t.Errorf("unknown user: exit %d, %q", code, out)
	}
}

func TestAuditCommandJSON(t *testing.T) {
	db := auditDB(t)
	out, errs, code := runCmd(t, "audit", "-db", db, "--json", "--since", "30d", "alice@example.com")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var rows []map[string]any
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	if len(rows) != 3 {
		t.Fatalf("%d rows, want 3:\n%s", len(rows), out)
	}
	r := rows[1]
	for k, v := range map[string]any{"account": "alice@example.com", "result": "pass", "address": "81.2.69.142",
		"network": "81.2.69.0/24", "country": "GB", "protocol": "imap", "listener": "imaps", "mechanism": "PLAIN",
		"client_id": "Thunderbird/128.1", "tls_version": "TLS 1.3", "tls_cipher": "TLS_AES_128_GCM_SHA256",
		"sni": "mail.example.com", "node": "mx1", "count": 1.0} {
		if r[k] != v {
			t.Errorf("%s = %v, want %v", k, r[k], v)
		}
	}
	if _, err := time.Parse(time.RFC3339, r["last_seen"].(string)); err != nil {
		t.Errorf("last_seen: %v", err)
	}
	out, _, _ = runCmd(t, "audit", "-db", db, "--json", "nobody")
	if strings.TrimSpace(out) != "[]" {
		t.Errorf("no rows in JSON: %q, want []", out)
	}
}

func TestAuditCommandTop(t *testing.T) {
	db := auditDB(t)
	out, errs, code := runCmd(t, "audit", "-db", db, "--top", "accounts")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[2], "alice@example.com  2 ") || !strings.HasPrefix(lines[3], "bob@example.com") {
		t.Errorf("--top accounts (24h):\n%s", out)
	}
	out, _, _ = runCmd(t, "audit", "-db", db, "--top", "countries", "--since", "30d", "--json")
	var rows []audit.TopRow
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].Key != "CN" || rows[0].Failures != 2 || rows[0].Accounts != 2 || rows[1].Key != "RU" {
		t.Errorf("--top countries --since 30d: %+v", rows)
	}
	out, _, _ = runCmd(t, "audit", "-db", db, "--top", "sources")
	if !strings.Contains(out, "SOURCE") || !strings.Contains(out, "77.88.55.88") {
		t.Errorf("--top sources:\n%s", out)
	}
}

func TestAuditCommandErrors(t *testing.T) {
	db := auditDB(t)
	for _, args := range [][]string{
		{"audit", "-db", db},
		{"audit", "-db", db, "alice", "bob"},
		{"audit", "-db", db, "alice", "--top", "accounts"},
		{"audit", "-db", db, "--since", "7 days", "alice"},
		{"audit", "-db", db, "--top", "passwords"},
	} {
		if _, errs, code := runCmd(t, args...); code == 0 || errs == "" {
			t.Errorf("%q: exit %d, stderr %q; want an error", args, code, errs)
		}
	}
	if _, errs, code := runCmd(t, "audit", "-db", filepath.Join(t.TempDir(), "missing.db"), "alice"); code != 1 || !strings.Contains(errs, "no such file") {
		t.Errorf("missing database: exit %d, %q", code, errs)
	}
	// Without -db, the config names the database; without audit.path the audit is off.
	cfg := filepath.Join(t.TempDir(), "mailgate.yaml")
	os.WriteFile(cfg, []byte("tls: {self_signed: true}\npolicy: {allow_countries: [GB]}\naudit: {path: "+db+"}\n"), 0o600)
	if out, errs, code := runCmd(t, "audit", "-config", cfg, "alice@example.com"); code != 0 || !strings.Contains(out, "denied") {
		t.Errorf("via -config: exit %d, %s%s", code, out, errs)
	}
}
