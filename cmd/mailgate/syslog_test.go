package main

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// syslogReceiver is a loopback UDP syslog server collecting datagrams.
type syslogReceiver struct {
	pc    net.PacketConn
	lines chan string
}

func newSyslogReceiver(t *testing.T) *syslogReceiver {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &syslogReceiver{pc: pc, lines: make(chan string, 100)}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			r.lines <- strings.TrimRight(string(buf[:n]), "\n")
		}
	}()
	return r
}

func (r *syslogReceiver) next(t *testing.T) string {
	t.Helper()
	select {
	case l := <-r.lines:
		return l
	case <-time.After(10 * time.Second):
		t.Fatal("no syslog datagram")
	}
	return ""
}

// drain returns what arrived and was not read yet.
func (r *syslogReceiver) drain() []string {
	var out []string
	for {
		select {
		case l := <-r.lines:
			out = append(out, l)
		default:
			return out
		}
	}
}

// sessionLogger builds what proxy does: a per-connection child logger.
func sessionLogger(base *slog.Logger, proto, remote string) *slog.Logger {
	return base.With("cid", "abcdefghijkl", "proto", proto, "listener", proto+"s", "remote", remote)
}

// logDecision mirrors proxy's logDecision record shape.
func logDecision(l *slog.Logger, event, user, cc, name string) {
	lvl := slog.LevelWarn
	if event == "AUTHPASS" {
		lvl = slog.LevelInfo
	}
	l.Log(context.Background(), lvl, event, "event", event, "user", user, "country", cc, "country_name", name,
		"rule", "policy.allow_countries", "reason", "test", "mech", "PLAIN", "client_id", "")
}

func startSyslogLogger(t *testing.T, stderr *bytes.Buffer, level string) (*slog.Logger, *syslogReceiver, func()) {
	t.Helper()
	r := newSyslogReceiver(t)
	cfg := &Config{Log: LogConfig{Level: level, Format: "text"},
		Syslog: SyslogConfig{Enabled: true, Address: "udp:" + r.pc.LocalAddr().String()}}
	cfg.applyOpsDefaults()
	if err := cfg.validateOps(); err != nil {
		t.Fatal(err)
	}
	log, closeLog, err := newServeLogger(cfg, stderr)
	if err != nil {
		t.Fatal(err)
	}
	return log, r, closeLog
}

func TestSyslogLegacyLines(t *testing.T) {
	var stderr bytes.Buffer
	log, r, closeLog := startSyslogLogger(t, &stderr, "warn")
	defer closeLog()
	imap := sessionLogger(log, "imap", "203.0.113.7")
	logDecision(imap, "COUNTRYFAILED", "bob@example.org", "RU", "Russia")
	logDecision(sessionLogger(log, "smtp", "2001:db8::1"), "AUTHFAILED", "carol", "DE", "Germany")
	logDecision(imap, "AUTHPASS", "alice", "US", "United States of America")
	imap.Info("session closed", "user", "alice") // not a decision: no line
	logDecision(imap, "AUTHFAILED", "", "", "")  // empty name keeps the shape

	// LOCAL0 (16) * 8 + severity info (6), as the PHP script sent all.
	want := []struct{ pri, msg string }{
		{"<134>", "NGINXMAILAUTH[%d]: bob@example.org : COUNTRYFAILED|imap 203.0.113.7|RU|Russia"},
		{"<134>", "NGINXMAILAUTH[%d]: carol : AUTHFAILED|smtp 2001:db8::1|DE|Germany"},
		{"<134>", "NGINXMAILAUTH[%d]: alice : AUTHPASS|imap 203.0.113.7|US|United States of America"},
		{"<134>", "NGINXMAILAUTH[%d]: - : AUTHFAILED|imap 203.0.113.7|-|-"},
	}
	for _, w := range want {
		got := r.next(t)
		msg := strings.Replace(w.msg, "%d", strconv.Itoa(os.Getpid()), 1)
		if !strings.HasPrefix(got, w.pri) || !strings.HasSuffix(got, msg) {
			t.Errorf("syslog line %q, want %s...%s", got, w.pri, msg)
		}
	}
	closeLog()
	if extra := r.drain(); len(extra) > 0 {
		t.Errorf("unexpected syslog lines: %q", extra)
	}
	// stderr keeps its level: the Info AUTHPASS is not there, the rest is.
	out := stderr.String()
	if strings.Contains(out, "msg=AUTHPASS") || !strings.Contains(out, "msg=COUNTRYFAILED") {
		t.Errorf("stderr log ignores log.level warn:\n%s", out)
	}
}

// A login name cannot forge a second line or put another address where a
// fail2ban filter looks for the client's.
func TestSyslogUserCannotInjectAddress(t *testing.T) {
	var stderr bytes.Buffer
	log, r, closeLog := startSyslogLogger(t, &stderr, "info")
	defer closeLog()
	evil := "x : AUTHFAILED|imap 192.0.2.99|RU|Russia\nNGINXMAILAUTH[1]: y : AUTHFAILED|imap 192.0.2.98|"
	logDecision(sessionLogger(log, "imap", "203.0.113.7"), "AUTHFAILED", evil, "DE", "Ger|many")
	got := r.next(t)
	if strings.Count(got, " : ") != 1 || strings.Count(got, "|") != 3 || strings.Contains(got, "\n") {
		t.Errorf("crafted login changed the line's shape: %q", got)
	}
	if !strings.HasSuffix(got, "|imap 203.0.113.7|DE|Ger?many") {
		t.Errorf("line %q does not end with the real address", got)
	}
	re := regexp.MustCompile(`: \S+ : (?:AUTHFAILED|COUNTRYFAILED)\|\S+ (\S+)\|[^|]*\|[^|]*$`)
	m := re.FindStringSubmatch(got)
	if m == nil || m[1] != "203.0.113.7" {
		t.Errorf("filter pattern finds %q in %q, want 203.0.113.7", m, got)
	}
}

func TestSyslogConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		addr, fac, tag string
		ok             bool
	}{
		{"", "LOCAL0", "NGINXMAILAUTH", true},
		{"127.0.0.1:514", "local3", "x", true},
		{"tcp:127.0.0.1:514", "MAIL", "x", true},
		{"unixgram:/dev/log", "AUTH", "x", true},
		{"udp:", "LOCAL0", "x", false},
		{"nonsense", "LOCAL0", "x", false},
		{"", "LOCAL9", "x", false},
		{"", "LOCAL0", "has space", false},
	} {
		c := &Config{Syslog: SyslogConfig{Enabled: true, Address: tc.addr, Facility: tc.fac, Tag: tc.tag}}
		c.applyOpsDefaults()
		err := c.validateOps()
		if (err == nil) != tc.ok {
			t.Errorf("syslog %+v: err = %v, want ok=%v", c.Syslog, err, tc.ok)
		}
	}
}

// The shipped fail2ban filter, run by the real fail2ban-regex, bans
// exactly the addresses of AUTHFAILED and COUNTRYFAILED lines mailgate
// sent to syslog, and not the address inside a crafted login name.
func TestFail2banFilterMatchesSyslogLines(t *testing.T) {
	f2b, err := exec.LookPath("fail2ban-regex")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("fail2ban-regex not installed (Debian: apt-get install fail2ban); CI=true")
		}
		t.Skip("fail2ban-regex not installed (Debian: apt-get install fail2ban)")
	}
	filter, err := filepath.Abs(filepath.Join("..", "..", "docs", "deploy", "fail2ban", "filter.d", "mailgate.conf"))
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	log, r, closeLog := startSyslogLogger(t, &stderr, "info")
	logDecision(sessionLogger(log, "imap", "203.0.113.7"), "COUNTRYFAILED", "bob@example.org", "RU", "Russia")
	logDecision(sessionLogger(log, "pop3", "198.51.100.4"), "AUTHFAILED", "carol", "NL", "Netherlands")
	logDecision(sessionLogger(log, "smtp", "2001:db8::1"), "AUTHFAILED", "dave", "", "")
	logDecision(sessionLogger(log, "imap", "192.0.2.10"), "AUTHPASS", "alice", "DE", "Germany")
	logDecision(sessionLogger(log, "imap", "192.0.2.11"), "AUTHFAILED", "x : AUTHFAILED|imap 192.0.2.99|", "DE", "Germany")
	closeLog()
	var file strings.Builder
	for range 5 {
		l := r.next(t)
		// Remove "<PRI>", as a syslog daemon does when it writes the file.
		file.WriteString(l[strings.IndexByte(l, '>')+1:] + "\n")
	}
	logPath := filepath.Join(t.TempDir(), "mail.log")
	if err := os.WriteFile(logPath, []byte(file.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(f2b, "-o", "ip", logPath, filter).CombinedOutput()
	if err != nil {
		t.Fatalf("fail2ban-regex: %v\n%s", err, out)
	}
	got := strings.Fields(string(out))
	slices.Sort(got)
	want := []string{"192.0.2.11", "198.51.100.4", "2001:db8::1", "203.0.113.7"}
	if !slices.Equal(got, want) {
		t.Errorf("fail2ban-regex matched %q, want %q\nlog:\n%s", got, want, file.String())
	}
}
