package proxy

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/backend"
	"github.com/mailgate/mailgate/internal/testwait"
)

// timedLogin sends one LOGIN on a fresh connection and returns the reply
// line's start and how long it took.
func (e *testEnv) timedLogin(tag, user, pass string) (string, time.Duration) {
	e.t.Helper()
	c := e.dialGreeted()
	start := time.Now()
	c.send(tag + " LOGIN " + user + " " + pass + "\r\n")
	line := c.expect(tag + " NO [")
	return line, time.Since(start)
}

// TestBackendDownReplyDoesNotDependOnDecision: a backend that cannot be
// reached fails the first allowed login after the decision with the
// uniform reply at the uniform moment; from then on, while the backend is
// known down, an allowed login, a denied one and a wrong password all get
// UNAVAILABLE, after the same delay.
func TestBackendDownReplyDoesNotDependOnDecision(t *testing.T) {
	const delay = 300 * time.Millisecond
	lim := fastLimits()
	lim.AuthFailureDelay = delay
	e := startServer(t, Listener{}, lim)
	e.imap.unavailable = true

	line, d := e.timedLogin("a", "alice", "secret")
	if !strings.HasPrefix(line, "a NO [AUTHENTICATIONFAILED] ") || d < delay {
		t.Fatalf("first login with the backend down: %q after %v, want the uniform failure after %v", line, d, delay)
	}
	for _, try := range []struct{ what, user, pass string }{
		{"allowed", "alice", "secret"},
		{"denied", "bob", "secret"},
		{"wrong password", "alice", "wrong"},
	} {
		line, d := e.timedLogin("b", try.user, try.pass)
		if !strings.HasPrefix(line, "b NO [UNAVAILABLE] ") || d < delay {
			t.Errorf("%s login with the backend known down: %q after %v, want NO [UNAVAILABLE] after %v", try.what, line, d, delay)
		}
	}
	testwait.For(t, "COUNTRYFAILED logged", func() bool { return strings.Contains(e.logs.String(), "msg=COUNTRYFAILED") })
	if n := len(e.imap.loginList()); n != 0 {
		t.Errorf("%d logins reached the backend", n)
	}
}

// TestBackendOddAnswerIsUniformFailure: an allowed login the backend
// answers with something that is no verdict (a protocol error, a
// timeout) gets the uniform failure at the uniform moment and does not
// mark the backend down: a client's odd login must not turn others away.
func TestBackendOddAnswerIsUniformFailure(t *testing.T) {
	const delay = 300 * time.Millisecond
	lim := fastLimits()
	lim.AuthFailureDelay = delay
	e := startServer(t, Listener{}, lim)
	e.imap.fail = fmt.Errorf("%w: imap: server said \"* BAD Error in IMAP command\"", backend.ErrUnavailable)
	for range 2 {
		line, d := e.timedLogin("a", "alice", "secret")
		if !strings.HasPrefix(line, "a NO [AUTHENTICATIONFAILED] ") || d < delay {
			t.Errorf("odd backend answer: %q after %v, want the uniform failure after %v", line, d, delay)
		}
	}
	if strings.Contains(e.logs.String(), "AUTHFAILED") {
		t.Errorf("a backend error was logged as AUTHFAILED (fail2ban would count it):\n%s", e.logs.String())
	}
}

func TestBackendHealth(t *testing.T) {
	var h backendHealth
	if h.down() {
		t.Fatal("zero value is down")
	}
	h.markDown()
	if !h.down() {
		t.Fatal("not down after markDown")
	}
	h.markUp()
	if h.down() {
		t.Fatal("down after markUp")
	}
	h.downUntil.Store(time.Now().Add(-time.Millisecond).UnixNano())
	if h.down() {
		t.Fatal("still down after the probe interval")
	}
}
