package console

import (
	"log/slog"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
)

// TestFeedGatherPanicKeepsRunning: a panic in what the live feed
// gathers (here the proxy's session list) is logged as an ERROR and
// neither ends the process nor the stream: the stream goes on with the
// next good snapshot. Both the first gather (when the stream opens) and
// one in the producer's goroutine panic.
func TestFeedGatherPanicKeepsRunning(t *testing.T) {
	var logs lockedBuf
	var calls atomic.Int64
	f := newFixture(t, func(c *Config) {
		c.Log = slog.New(slog.NewTextHandler(&logs, nil))
		c.Sessions = func() []Session {
			switch calls.Add(1) {
			case 1, 3:
				panic("session list broken")
			}
			return []Session{{ID: "s1", Account: "alice@example.test", Addr: netip.MustParseAddr("192.0.2.7"), Protocol: "imap", Listener: "imaps"}}
		}
	})
	srv := httptest.NewServer(f.h)
	t.Cleanup(srv.Close)
	ck, _ := f.signIn("help", viewerPW)
	br := openStream(t, srv, "/console/events?page=sessions", ck)
	// Call 1 (the stream's join) panicked: nothing sent; call 2 (first
	// tick) is good; call 3 (second tick) panicked; call 4 is good.
	for i := range 2 {
		if ev := readEvent(t, br); !strings.Contains(ev, "alice@example.test") {
			t.Fatalf("event %d: %q, want the session list", i, ev)
		}
	}
	if n := calls.Load(); n < 4 {
		t.Errorf("%d gathers, want at least 4", n)
	}
	if got := strings.Count(logs.String(), `level=ERROR msg="console: live data gather panicked; previous snapshot kept"`); got != 2 {
		t.Errorf("%d ERROR lines for the 2 panics:\n%s", got, logs.String())
	}
}
