package proxy

// Live sessions for the web console (docs/console.md): a snapshot of the
// registry's logged-in sessions, and a disconnect by session id. A
// session is listed from the moment its login succeeded; what is shown
// of it is published once then (liveInfo), so reading it never races
// with the session's own goroutine.

import (
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/mailgate/mailgate/policy"
)

// LiveSession is one logged-in session.
type LiveSession struct {
	ID       string // the session id of the log lines
	Account  string // the login as the client sent it (sanitized)
	Addr     netip.Addr
	Protocol policy.Protocol
	Listener string
	Since    time.Time // when the login succeeded
	// BytesIn and BytesOut are wire bytes from and to the client since
	// the connection opened (TLS included).
	BytesIn, BytesOut int64
}

// liveInfo is what a session publishes when its login succeeds.
type liveInfo struct {
	account string
	addr    netip.Addr
	since   time.Time
}

// publishLive marks c logged in; called once, by c's goroutine, when
// the login passed and before the client is told.
func (c *conn) publishLive() {
	c.live.Store(&liveInfo{account: c.user, addr: c.remote.Addr(), since: time.Now()})
}

// LiveSessions lists the logged-in sessions, oldest first.
func (s *Server) LiveSessions() []LiveSession {
	s.mu.Lock()
	out := make([]LiveSession, 0, len(s.conns))
	for c := range s.conns {
		li := c.live.Load()
		if li == nil {
			continue
		}
		out = append(out, LiveSession{
			ID: c.cid, Account: li.account, Addr: li.addr, Protocol: c.ln.Protocol, Listener: c.ln.Name,
			Since: li.since, BytesIn: c.raw.in.Load(), BytesOut: c.raw.out.Load(),
		})
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b LiveSession) int {
		if n := a.Since.Compare(b.Since); n != 0 {
			return n
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

// Disconnect closes the logged-in session with id (both sockets: the
// client sees its connection closed); it reports whether there was one.
func (s *Server) Disconnect(id string) bool {
	s.mu.Lock()
	var found *conn
	for c := range s.conns {
		if c.cid == id && c.live.Load() != nil {
			found = c
			break
		}
	}
	s.mu.Unlock()
	if found == nil {
		return false
	}
	found.log.Info("session disconnected by an admin")
	found.forceClose()
	return true
}
