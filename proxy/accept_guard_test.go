package proxy

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/guard"
	"github.com/mailgate/mailgate/internal/testwait"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// A banned source on a listener without PROXY protocol is refused in
// the accept loop: no greeting, no session, counted per listener, and a
// burst of refusals gives one summary log line, not one per connection.
func TestGuardRefusedInAcceptLoop(t *testing.T) {
	e := startServer(t, Listener{Name: "imap-plain"}, fastLimits())
	m, _ := withMetrics(t, e)
	g, err := guard.New(guard.Defaults(), guard.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.AddBan(netip.MustParsePrefix("127.0.0.1/32"), time.Hour, "test"); err != nil {
		t.Fatal(err)
	}
	o := *e.srv.options()
	o.Guard = g
	e.srv.Update(o)

	const n = 20
	for range n {
		nc, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		if k, _ := nc.Read(make([]byte, 1)); k != 0 {
			t.Fatal("banned source got bytes")
		}
		nc.Close()
	}
	testwait.For(t, "refusals counted", func() bool {
		return testutil.ToFloat64(m.refused.WithLabelValues("imap-plain")) == n
	})
	logs := e.logs.String()
	if strings.Contains(logs, "session closed") {
		t.Errorf("a refused connection became a session:\n%s", logs)
	}
	// The burst takes well under refusedLogInterval on loopback, but a
	// slow machine may cross one boundary.
	if k := strings.Count(logs, "connections refused by guard"); k < 1 || k > 2 {
		t.Errorf("%d summary lines for %d refusals, want 1 (2 on a slow run):\n%s", k, n, logs)
	}
	if !strings.Contains(logs, "last_remote=127.0.0.1") {
		t.Errorf("summary line lacks the refused address:\n%s", logs)
	}
	if got := testutil.ToFloat64(m.connections.WithLabelValues("imap-plain", "imap")); got != 0 {
		t.Errorf("connections_total %v, want 0: refused sockets are not sessions", got)
	}

	// An allowed source still gets its session and the guard's count.
	if !g.RemoveBan(netip.MustParsePrefix("127.0.0.1/32")) {
		t.Fatal("ban not lifted")
	}
	c := e.dialGreeted()
	c.send("a LOGOUT\r\n")
	c.expect("* BYE")
}
