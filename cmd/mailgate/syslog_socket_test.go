package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailgate/mailgate/cmd/mailgate/internal/legacysyslog"
	"github.com/mailgate/mailgate/internal/testwait"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// lockedBuffer is a bytes.Buffer safe for the logger and the test.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// unixSyslog is a syslog daemon's datagram socket at path.
type unixSyslog struct {
	c     *net.UnixConn
	lines chan string
}

func listenUnixSyslog(t *testing.T, path string) *unixSyslog {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	u := &unixSyslog{c: c, lines: make(chan string, 1000)}
	go func() {
		buf := make([]byte, 8192)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			u.lines <- string(buf[:n])
		}
	}()
	return u
}

// gone closes the socket and removes its file, as a stopped daemon does.
func (u *unixSyslog) gone(t *testing.T, path string) {
	t.Helper()
	u.c.Close()
	os.Remove(path)
}

// Issue #22 item 5: with the syslog socket missing, serve's logger still
// starts (an ERROR names the socket), lines are counted as dropped, and
// once the socket is there, and again after it went away and came back,
// lines reach it. Logging never waits for the socket.
func TestSyslogSocketMissingThenBack(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	var stderr lockedBuffer
	cfg := &Config{Log: LogConfig{Level: "info", Format: "text"},
		Syslog: SyslogConfig{Enabled: true, Address: "unixgram:" + path}}
	cfg.applyOpsDefaults()
	log, closeLog, err := newServeLogger(cfg, &stderr)
	if err != nil {
		t.Fatalf("newServeLogger with the socket missing: %v", err)
	}
	defer closeLog()
	if out := stderr.String(); !strings.Contains(out, "level=ERROR") || !strings.Contains(out, path) {
		t.Errorf("no ERROR naming %s:\n%s", path, out)
	}
	reg := prometheus.NewRegistry()
	registerSyslogMetrics(reg, log)
	s := sessionLogger(log, "imap", "203.0.113.7")

	// sendUntil logs decisions until one reaches u (the writer redials
	// at most once a second).
	sendUntil := func(u *unixSyslog, user string) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for time.Now().Before(deadline) {
			start := time.Now()
			logDecision(s, "AUTHFAILED", user, "RU", "Russia")
			if d := time.Since(start); d > time.Second {
				t.Errorf("logging a decision took %s", d)
			}
			select {
			case l := <-u.lines:
				if strings.Contains(l, user+" : AUTHFAILED|imap 203.0.113.7|RU|Russia") {
					return
				}
			case <-time.After(100 * time.Millisecond):
			}
		}
		t.Fatalf("no line for %s reached the socket", user)
	}
	sink := log.Handler().(*legacysyslog.Handler).Sink()
	logDecision(s, "AUTHFAILED", "early", "RU", "Russia")
	testwait.For(t, "a dropped line counted", func() bool { return sink.Lost() >= 1 })
	u := listenUnixSyslog(t, path)
	sendUntil(u, "first")
	u.gone(t, path)
	n := sink.Lost()
	logDecision(s, "AUTHFAILED", "lost", "RU", "Russia")
	testwait.For(t, "the line to a removed socket counted", func() bool { return sink.Lost() > n })
	u = listenUnixSyslog(t, path)
	defer u.gone(t, path)
	sendUntil(u, "again")

	if n, err := testutil.GatherAndCount(reg, "mailgate_syslog_lines_dropped_total", "mailgate_syslog_connected"); err != nil || n != 3 {
		t.Errorf("syslog metrics: %d series, err %v; want 3", n, err)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`# HELP mailgate_syslog_connected 1 while the syslog socket for the legacy lines is connected.
# TYPE mailgate_syslog_connected gauge
mailgate_syslog_connected 1
`), "mailgate_syslog_connected"); err != nil {
		t.Error(err)
	}
	if sink.Lost() < 2 {
		t.Errorf("lines lost to the missing socket: %d, want at least 2", sink.Lost())
	}
}

// check-config names the missing syslog socket; with it there, the
// config is OK.
func TestCheckConfigFindsMissingSyslogSocket(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "log")
	cfgPath := filepath.Join(dir, "mailgate.yaml")
	yaml := "hostname: mail.example.test\nlisteners: [{name: imap, protocol: imap, address: \"127.0.0.1:0\", tls: none}]\ntls: {self_signed: true}\n" +
		"syslog: {enabled: true, address: \"unixgram:" + path + "\"}\n"
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := runCheckConfig([]string{"-config", cfgPath}, &out, &errOut); code == 0 || !strings.Contains(errOut.String(), "syslog.address") || !strings.Contains(errOut.String(), path) {
		t.Fatalf("check-config without the socket = %d, stderr:\n%s", code, errOut.String())
	}
	u := listenUnixSyslog(t, path)
	defer u.gone(t, path)
	out.Reset()
	errOut.Reset()
	if code := runCheckConfig([]string{"-config", cfgPath}, &out, &errOut); code != 0 {
		t.Fatalf("check-config with the socket = %d, stderr:\n%s", code, errOut.String())
	}
}
