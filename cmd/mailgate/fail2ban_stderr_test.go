package main

import (
	"bytes"
	"context"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/guard"
)

// The shipped structured-log filter, run by the real fail2ban-regex,
// finds the addresses of failures and bans in the text log as it reaches
// a file: written directly, or by a syslog daemon behind "date host
// mailgate[pid]: " (journald forwarding); never an address a client put
// in its user name or IMAP ID (issue #14, finding 4).
func TestFail2banStderrFilterPrefixes(t *testing.T) {
	f2b, err := exec.LookPath("fail2ban-regex")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("fail2ban-regex not installed (Debian: apt-get install fail2ban); CI=true")
		}
		t.Skip("fail2ban-regex not installed (Debian: apt-get install fail2ban)")
	}
	filter, err := filepath.Abs(filepath.Join("..", "..", "docs", "deploy", "fail2ban", "filter.d", "mailgate-stderr.conf"))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	log := newLogger(LogConfig{Level: "debug", Format: "text"}, &buf)
	// User names and IDs as the proxy logs them: escaped already.
	logDecision(sessionLogger(log, "imap", "203.0.113.7"), "COUNTRYFAILED", "x msg=AUTHFAILED remote=6.6.6.6", "RU", "Russia")
	logDecision(sessionLogger(log, "smtp", "2001:db8::1"), "AUTHFAILED", `nbsp\u00a0remote=6.6.6.6 event=`, "", "")
	logDecision(sessionLogger(log, "imap", "192.0.2.10"), "AUTHPASS", "msg=AUTHFAILED remote=6.6.6.6", "DE", "Germany")
	sessionLogger(log, "imap", "192.0.2.11").Info("session closed", "user", "", "client_id",
		"msg=AUTHFAILED cid=aaaaaaaaaaaa proto=imap listener=imaps remote=6.6.6.6 event=")
	guard.Event{Kind: guard.EventBanned, Prefix: netip.MustParsePrefix("198.51.100.7/32"),
		Until: time.Now().Add(time.Hour), Duration: time.Hour, Failures: 10, Reason: "test"}.Log(context.Background(), log)
	guard.Event{Kind: guard.EventLocked, Login: "remote=6.6.6.6", Reason: "test"}.Log(context.Background(), log)

	want := map[string]int{"203.0.113.7": 1, "2001:db8::1": 1, "198.51.100.7": 1}
	lines := strings.Split(strings.TrimRight(buf.String(), "\n"), "\n")
	for _, prefix := range []string{"", "Dec  6 14:00:00 mx mailgate[812]: ", "2026-12-06T14:00:00.123456+00:00 mx mailgate[812]: "} {
		var file strings.Builder
		for _, l := range lines {
			file.WriteString(prefix + l + "\n")
		}
		logPath := filepath.Join(t.TempDir(), "mail.log")
		if err := os.WriteFile(logPath, []byte(file.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(f2b, "-o", "ip", logPath, filter).CombinedOutput()
		if err != nil {
			t.Fatalf("fail2ban-regex: %v\n%s", err, out)
		}
		got := map[string]int{}
		for _, ip := range strings.Fields(string(out)) {
			got[ip]++
		}
		if !maps.Equal(got, want) {
			t.Errorf("prefix %q: found %v, want %v\nlog:\n%s", prefix, got, want, file.String())
		}
	}
}
