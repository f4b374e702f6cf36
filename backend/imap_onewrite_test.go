package backend

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
)

// writeCounter counts the writes on a connection.
type writeCounter struct {
	net.Conn
	writes atomic.Int32
}

func (w *writeCounter) Write(b []byte) (int, error) {
	w.writes.Add(1)
	return w.Conn.Write(b)
}

// TestIMAPIDAndLoginOneWrite: with forward_client, the ID command and a
// one-line login go to the server in one write (one segment, one wakeup
// of the server's login process), and the login still succeeds with the
// ID reply read first (issue #20).
func TestIMAPIDAndLoginOneWrite(t *testing.T) {
	for _, c := range []struct {
		name       string
		caps       string
		forceLogin bool
	}{
		{"AUTHENTICATE PLAIN with SASL-IR", "", false},
		{"LOGIN with quoted strings", "", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := &imapFake{caps: c.caps}
			srv := newFakeServer(t, f.handle)
			nc, err := net.Dial("tcp", srv.addr())
			if err != nil {
				t.Fatal(err)
			}
			wc := &writeCounter{Conn: nc}
			o := testOpts(t, srv.addr()).withDefaults()
			o.ForwardClient = true
			cn := newConn(context.Background(), wc, o, "imap", o.Logger)
			defer cn.close()
			s := &imapSession{conn: cn}
			reply, err := s.login(testClient, "a1", "alice@example.test", "pw", c.forceLogin)
			if err != nil {
				t.Fatal(err)
			}
			if len(reply) == 0 {
				t.Fatal("no reply")
			}
			if n := wc.writes.Load(); n != 1 {
				t.Errorf("%d writes for ID and the login, want 1", n)
			}
		})
	}
}
