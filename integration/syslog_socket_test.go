//go:build integration

package integration

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// unixgramSyslog is a syslog daemon's datagram socket at a path.
type unixgramSyslog struct {
	c     *net.UnixConn
	lines chan string
}

func listenUnixgramSyslog(t *testing.T, path string) *unixgramSyslog {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	s := &unixgramSyslog{c: c, lines: make(chan string, 100)}
	go func() {
		buf := make([]byte, 8192)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			s.lines <- string(buf[:n])
		}
	}()
	return s
}

// stop closes the socket and removes its file, as a stopped daemon does.
func (s *unixgramSyslog) stop(path string) {
	s.c.Close()
	os.Remove(path)
}

// TestSyslogSocketGoneDoesNotStopMail (issue #22 item 5): check-config
// names a missing syslog socket; serve starts anyway and logs an ERROR
// naming it; logins work while the socket is missing, appears, goes away
// and comes back, and once it is there the lines reach it (mailgate
// redials at most once a second, so a login or two may go unlogged).
func TestSyslogSocketGoneDoesNotStopMail(t *testing.T) {
	hs := need(t)
	const user = "alice@example.test"
	path := filepath.Join(t.TempDir(), "log")
	c := newCfg(t)
	c.Extra = fmt.Sprintf("syslog: {enabled: true, address: %q}", "unixgram:"+path)

	cfgPath := filepath.Join(t.TempDir(), "mailgate.yaml")
	if err := os.WriteFile(cfgPath, []byte(c.YAML()), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(hs.mailgateBin, "check-config", "-config", cfgPath).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "syslog.address") || !strings.Contains(string(out), path) {
		t.Errorf("check-config with the socket missing: %v\n%s", err, out)
	}

	m := startCfg(t, c)
	m.WaitLog(t, "level=ERROR msg=\"syslog: not connected")
	if !hasLine(m.Log(), "level=ERROR", path) {
		t.Errorf("the ERROR does not name %s:\n%s", path, m.Log())
	}
	login := func(what string) {
		t.Helper()
		if r := imapLoginRaw(t, "", m.Addr["imaps"], "", user, users[user]); !strings.HasPrefix(r, "a1 OK") {
			t.Fatalf("login %s = %q", what, r)
		}
	}
	// loginUntilLogged logs in until a line reaches s.
	loginUntilLogged := func(s *unixgramSyslog, what string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			login(what)
			select {
			case l := <-s.lines:
				if strings.Contains(l, user+" : AUTHPASS|imap 127.0.0.1|GB|") {
					return
				}
			case <-time.After(300 * time.Millisecond):
			}
		}
		t.Fatalf("%s: no AUTHPASS line reached the syslog socket", what)
	}

	login("with the socket missing")
	s := listenUnixgramSyslog(t, path)
	loginUntilLogged(s, "after the socket appeared")
	s.stop(path)
	login("after the socket went away")
	login("with the socket still away")
	s = listenUnixgramSyslog(t, path)
	defer s.stop(path)
	loginUntilLogged(s, "after the socket came back")
}
