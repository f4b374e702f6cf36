package main

import (
	"bytes"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"
)

// startSyslogWith is startSyslogLogger with a syslog config of the test's.
func startSyslogWith(t *testing.T, stderr *bytes.Buffer, sc SyslogConfig) (*slog.Logger, *syslogReceiver, func()) {
	t.Helper()
	r := newSyslogReceiver(t)
	sc.Enabled, sc.Address = true, "udp:"+r.pc.LocalAddr().String()
	cfg := &Config{Log: LogConfig{Level: "info", Format: "text"}, Syslog: sc}
	cfg.applyOpsDefaults()
	if err := cfg.validateOps(); err != nil {
		t.Fatal(err)
	}
	log, closeLog, err := newServeLogger(cfg, stderr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closeLog)
	return log, r, closeLog
}

// Issue #22 items 6 and 7: an address the geo database did not place in a
// country is written "-|-" as the PHP script wrote it (the label stays in
// the structured log), and failures go out at LOG_INFO as the script sent
// them, unless syslog.failure_severity asks for warning.
func TestSyslogLegacyUnplacedAndSeverity(t *testing.T) {
	pid := strconv.Itoa(os.Getpid())
	for _, tt := range []struct {
		severity, failPri string
	}{
		{"", "<134>"}, // default: info
		{"info", "<134>"},
		{"warning", "<132>"},
	} {
		var stderr bytes.Buffer
		log, r, closeLog := startSyslogWith(t, &stderr, SyslogConfig{FailureSeverity: tt.severity})
		s := sessionLogger(log, "imap", "127.0.0.1")
		logDecision(s, "COUNTRYFAILED", "bob", "loopback", "loopback address")
		logDecision(sessionLogger(log, "pop3", "10.1.2.3"), "AUTHFAILED", "carol", "private", "private network")
		logDecision(sessionLogger(log, "smtp", "192.0.2.9"), "AUTHFAILED", "dave", "unknown", "")
		logDecision(s, "AUTHPASS", "alice", "loopback", "loopback address")
		for _, w := range []struct{ pri, msg string }{
			{tt.failPri, "bob : COUNTRYFAILED|imap 127.0.0.1|-|-"},
			{tt.failPri, "carol : AUTHFAILED|pop3 10.1.2.3|-|-"},
			{tt.failPri, "dave : AUTHFAILED|smtp 192.0.2.9|-|-"},
			{"<134>", "alice : AUTHPASS|imap 127.0.0.1|-|-"},
		} {
			got := r.next(t)
			if !strings.HasPrefix(got, w.pri) || !strings.HasSuffix(got, "NGINXMAILAUTH["+pid+"]: "+w.msg) {
				t.Errorf("failure_severity %q: syslog line %q, want %s...%s", tt.severity, got, w.pri, w.msg)
			}
		}
		closeLog()
		if out := stderr.String(); !strings.Contains(out, `country=loopback country_name="loopback address"`) {
			t.Errorf("the structured log lost the label:\n%s", out)
		}
	}
	bad := &Config{Syslog: SyslogConfig{FailureSeverity: "notice"}}
	bad.applyOpsDefaults()
	if err := bad.validateOps(); err == nil || !strings.Contains(err.Error(), "syslog.failure_severity") {
		t.Errorf("failure_severity notice: err = %v, want a syslog.failure_severity error", err)
	}
}
