//go:build integration

package integration

import (
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestReloadPolicyKeepsSessions: SIGHUP with a new policy applies it to
// new logins at once, while a session spliced before the reload carries
// on; a broken config on the next SIGHUP is refused and the last good one
// stays in force.
func TestReloadPolicyKeepsSessions(t *testing.T) {
	const user = "bob@example.test"
	c := newCfg(t)
	m := startCfg(t, c)
	old := imapDial(t, m.Addr["imaps"], true, user, users[user], nil)
	if _, err := old.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}

	c.Allow = []string{"US"} // 127.0.0.1 is GB: now denied
	if !m.Reload(t, c.YAML()) {
		t.Fatalf("valid config refused on reload; log:\n%s", m.Log())
	}
	if r := imapLoginRaw(t, "", m.Addr["imaps"], "", user, users[user]); !strings.HasPrefix(r, "a1 NO [AUTHENTICATIONFAILED]") {
		t.Fatalf("login after reload to allow [US] = %q, want NO [AUTHENTICATIONFAILED]", r)
	}
	m.WaitLog(t, "COUNTRYFAILED")
	if err := old.Noop().Wait(); err != nil {
		t.Fatalf("session from before the reload broke: %v", err)
	}
	if _, err := old.Select("Trash", nil).Wait(); err != nil {
		t.Fatalf("session from before the reload broke: %v", err)
	}

	if m.Reload(t, "listeners: [this is not: valid") {
		t.Fatal("broken config accepted on reload")
	}
	if r := imapLoginRaw(t, "", m.Addr["imaps"], "", user, users[user]); !strings.HasPrefix(r, "a1 NO [AUTHENTICATIONFAILED]") {
		t.Fatalf("after a failed reload, login = %q; want the last good policy (deny GB)", r)
	}
	c.Allow = []string{"GB"}
	if !m.Reload(t, c.YAML()) {
		t.Fatal("valid config refused on reload")
	}
	if r := imapLoginRaw(t, "", m.Addr["imaps"], "", user, users[user]); !strings.HasPrefix(r, "a1 OK") {
		t.Fatalf("login after reload to allow [GB] = %q, want OK", r)
	}
	if err := old.Logout().Wait(); err != nil {
		t.Fatal(err)
	}
}

// TestShutdownDrains: on SIGTERM mailgate stops accepting, lets a spliced
// session finish its work, and exits 0 once it has logged out.
func TestShutdownDrains(t *testing.T) {
	const user = "carol@example.test"
	c := newCfg(t)
	c.Extra = "drain_timeout: 60s"
	m := startCfg(t, c)
	s := imapDial(t, m.Addr["imaps"], true, user, users[user], nil)
	if _, err := s.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := m.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	m.WaitLog(t, "draining")
	if !waitFor(func() bool { return !accepting(m.Addr["imaps"]) }, eventually) {
		t.Fatal("listener still accepts after SIGTERM")
	}
	select {
	case <-m.done:
		t.Fatalf("mailgate exited with a session still open; log:\n%s", m.Log())
	default:
	}
	if err := s.Noop().Wait(); err != nil {
		t.Fatalf("session broke during the drain: %v", err)
	}
	if err := s.Logout().Wait(); err != nil {
		t.Fatalf("logout during the drain: %v", err)
	}
	select {
	case <-m.done:
	case <-time.After(30 * time.Second):
		t.Fatal("mailgate did not exit after the last session ended")
	}
	if code := m.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit code after drain = %d, want 0; log:\n%s", code, m.Log())
	}
}
