package legacysyslog

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"
)

// listenUDP is a loopback syslog server; lines receives each datagram.
func listenUDP(t testing.TB) (addr string, lines chan string) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	lines = make(chan string, 100)
	go func() {
		buf := make([]byte, 2048)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			select {
			case lines <- string(buf[:n]):
			default:
			}
		}
	}()
	return "udp:" + pc.LocalAddr().String(), lines
}

func decision(l *slog.Logger, event, user, cc, name string) {
	l.Log(context.Background(), slog.LevelWarn, event, "event", event, "user", user, "country", cc, "country_name", name)
}

// The handler sends the legacy line of decision records only, with the
// fields of the session logger (With) and of the record, at the
// configured severity; everything still reaches the next handler.
func TestHandlerSendsLegacyLines(t *testing.T) {
	addr, lines := listenUDP(t)
	sink, err := Dial(Config{Address: addr, Facility: "LOCAL0", Tag: "NGINXMAILAUTH", FailureSeverity: SeverityWarning}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	var next strings.Builder
	log := slog.New(NewHandler(slog.NewTextHandler(&next, nil), sink)).With("proto", "imap", "remote", "203.0.113.7")
	decision(log, "COUNTRYFAILED", "bob@example.org", "RU", "Russia")
	log.Info("session closed", "user", "bob@example.org")
	log.WithGroup("g").Warn("AUTHFAILED", "user", "x") // keys in a group are not ours
	log.Info("BANNED", "prefix", "203.0.113.0/24", "user", "")
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"<132>", " NGINXMAILAUTH[", "]: bob@example.org : COUNTRYFAILED|imap 203.0.113.7|RU|Russia",
		"<132>", "]: - : BANNED|imap 203.0.113.7|203.0.113.0/24|",
	}
	got := []string{}
	timeout := time.After(10 * time.Second)
	for len(got) < 2 {
		select {
		case l := <-lines:
			got = append(got, strings.TrimSuffix(l, "\n"))
		case <-timeout:
			t.Fatalf("lines so far: %q", got)
		}
	}
	if !strings.HasPrefix(got[0], want[0]) || !strings.Contains(got[0], want[1]) || !strings.HasSuffix(got[0], want[2]) {
		t.Errorf("line 1 = %q", got[0])
	}
	if !strings.HasPrefix(got[1], want[3]) || !strings.HasSuffix(got[1], want[4]) {
		t.Errorf("line 2 = %q", got[1])
	}
	if n := strings.Count(next.String(), "\n"); n != 4 {
		t.Errorf("next handler got %d records, want 4:\n%s", n, next.String())
	}
	if sink.Dropped() != 0 || sink.Lost() != 0 {
		t.Errorf("dropped %d, lost %d", sink.Dropped(), sink.Lost())
	}
}

func TestLegacyLineUnplaced(t *testing.T) {
	for cc, want := range map[string]string{
		"DE":      "u : AUTHFAILED|pop3 10.1.2.3|DE|Germany",
		"private": "u : AUTHFAILED|pop3 10.1.2.3|-|-",
		"":        "u : AUTHFAILED|pop3 10.1.2.3|-|-",
		"de":      "u : AUTHFAILED|pop3 10.1.2.3|-|-",
	} {
		got := legacyLine("AUTHFAILED", legacyFields{user: "u", proto: "pop3", remote: "10.1.2.3", country: cc, countryName: "Germany"})
		if got != want {
			t.Errorf("country %q: %q, want %q", cc, got, want)
		}
	}
	if got := legacyField("a\u00a0b c|d\x00"); got != `a\u00a0b?c?d?` {
		t.Errorf("legacyField = %q", got)
	}
}

func TestParseAddressAndFacility(t *testing.T) {
	for addr, want := range map[string]string{
		"":                  " ",
		"127.0.0.1:514":     "udp 127.0.0.1:514",
		"tcp:[::1]:514":     "tcp [::1]:514",
		"unixgram:/dev/log": "unixgram /dev/log",
		"unix:/dev/log":     "unix /dev/log",
		"udp:":              "error",
		"nonsense":          "error",
	} {
		n, a, err := ParseAddress(addr)
		got := n + " " + a
		if err != nil {
			got = "error"
		}
		if got != want {
			t.Errorf("ParseAddress(%q) = %q, want %q", addr, got, want)
		}
	}
	if _, err := ParseFacility("local3"); err != nil {
		t.Error(err)
	}
	if _, err := ParseFacility("LOCAL9"); err == nil || !strings.Contains(err.Error(), "LOCAL0..LOCAL7") {
		t.Errorf("LOCAL9: %v", err)
	}
}

// BenchmarkHandler is the cost a login decision record pays for the
// legacy line: field collection, formatting and the queue hand-off (the
// UDP write happens on the writer goroutine).
func BenchmarkHandler(b *testing.B) {
	addr, _ := listenUDP(b)
	sink, err := Dial(Config{Address: addr, Facility: "LOCAL0", Tag: "NGINXMAILAUTH"}, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	log := slog.New(NewHandler(slog.DiscardHandler, sink)).With("cid", "abcdefghijkl", "proto", "imap", "remote", "203.0.113.7")
	b.ReportAllocs()
	for b.Loop() {
		decision(log, "COUNTRYFAILED", "bob@example.org", "RU", "Russian Federation")
	}
	b.ReportMetric(float64(sink.Dropped())/float64(b.N), "dropped/op")
}

// FuzzLegacyLine: whatever a client sends as its login name, the legacy
// line keeps its shape: one line, one " : ", three '|', and the address
// field where fail2ban looks for it.
func FuzzLegacyLine(f *testing.F) {
	f.Add("bob@example.org", "Russian Federation")
	f.Add("x : AUTHFAILED|imap 192.0.2.1|RU|Russia", "A|B")
	f.Add("a\nNGINXMAILAUTH[1]: b : AUTHFAILED|imap 192.0.2.2|", "")
	f.Fuzz(func(t *testing.T, user, name string) {
		l := legacyLine("AUTHFAILED", legacyFields{user: user, proto: "imap", remote: "203.0.113.7",
			country: "RU", countryName: name})
		if strings.ContainsAny(l, "\r\n") || strings.Count(l, " : ") != 1 || strings.Count(l, "|") != 3 {
			t.Fatalf("line lost its shape: %q", l)
		}
		if !strings.Contains(l, " : AUTHFAILED|imap 203.0.113.7|RU|") {
			t.Fatalf("address field moved: %q", l)
		}
	})
}
