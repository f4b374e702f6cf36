package legacysyslog

import (
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestConsoleLockedHasNoLegacyLine: the guard's LOCKED of a web console
// account (console_user, no user) gets no legacy line, which would read
// as a mail login's; a mail login's LOCKED still does.
func TestConsoleLockedHasNoLegacyLine(t *testing.T) {
	addr, lines := listenUDP(t)
	sink, err := Dial(Config{Address: addr, Facility: "LOCAL0", Tag: "NGINXMAILAUTH"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(NewHandler(slog.DiscardHandler, sink))
	log.Warn("LOCKED", "console_user", "root", "reason", "10 distinct wrong passwords")
	log.Warn("LOCKED", "user", "console:root", "reason", "10 distinct wrong passwords")
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case l := <-lines:
		if !strings.Contains(l, "]: console:root : LOCKED|") {
			t.Errorf("first legacy line %q, want the mail login console:root's", l)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no legacy line")
	}
	select {
	case l := <-lines:
		t.Errorf("a second legacy line %q", l)
	case <-time.After(200 * time.Millisecond):
	}
}
