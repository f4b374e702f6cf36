package proxy

import (
	"strings"
	"testing"

	"github.com/mailgate/mailgate/internal/testwait"
)

// TestLiveSessionsAndDisconnect: a session is listed once its login
// succeeded (not before), with its account and address, and Disconnect
// closes it: the client sees its connection closed.
func TestLiveSessionsAndDisconnect(t *testing.T) {
	e := startServer(t, Listener{}, fastLimits())
	pre := e.dialGreeted()
	c := e.dialGreeted()
	c.send("a LOGIN alice secret\r\n")
	c.expect("a OK")
	var id string
	testwait.For(t, "the logged-in session listed", func() bool {
		ls := e.srv.LiveSessions()
		if len(ls) != 1 {
			return false
		}
		id = ls[0].ID
		return ls[0].Account == "alice" && ls[0].Addr.String() == "127.0.0.1" && ls[0].Listener == "test" && ls[0].BytesOut > 0
	})
	if !strings.Contains(e.logs.String(), "cid="+id) {
		t.Errorf("session id %s is not the log's cid", id)
	}
	if e.srv.Disconnect("nosuchsession") {
		t.Error("Disconnect of an unknown id reported success")
	}
	if !e.srv.Disconnect(id) {
		t.Fatal("Disconnect of the listed session failed")
	}
	c.expectClosed()
	testwait.For(t, "the session gone", func() bool { return len(e.srv.LiveSessions()) == 0 })
	pre.send("b NOOP\r\n")
	pre.expect("b OK")
}

// TestLiveSessionListedWhenClientHearsOK: a client that has read its
// login's OK is already on the live list (the console's live sessions
// page must show what the client saw), every time.
func TestLiveSessionListedWhenClientHearsOK(t *testing.T) {
	e := startServer(t, Listener{}, fastLimits())
	for i := range 50 {
		c := e.dialGreeted()
		c.send("a LOGIN alice secret\r\n")
		c.expect("a OK")
		if n := len(e.srv.LiveSessions()); n != i+1 {
			t.Fatalf("login %d: the client read OK, %d sessions listed, want %d", i+1, n, i+1)
		}
	}
}
