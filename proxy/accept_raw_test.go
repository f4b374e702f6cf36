package proxy

import (
	"bufio"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailgate/mailgate/guard"
	"github.com/mailgate/mailgate/internal/testwait"
)

// serveGuarded runs a server that has guard g from its first accept, so
// every connection takes the raw accept path (accept_linux.go), on a
// listener bound to addr.
func serveGuarded(t *testing.T, addr string, g *guard.Guard) (*Server, string, *syncBuffer) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("cannot listen on %s: %v", addr, err)
	}
	logs := &syncBuffer{}
	srv := NewServer(Options{
		Logger:     slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Hostname:   "mx.test",
		Authorizer: &fakeAuth{},
		IMAP:       newFakeIMAP(t),
		Limits:     fastLimits(),
		Guard:      g,
	})
	l := Listener{Name: "raw", Protocol: "imap", TLS: tlsNone,
		PlaintextFrom: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln, l) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return srv, ln.Addr().String(), logs
}

// greeting dials addr from local (empty: any) and returns the first line,
// or "" when the server closed the socket without a byte.
func greeting(t *testing.T, local, addr string) string {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(nc).ReadString('\n')
	if err != nil && line != "" {
		t.Fatalf("partial greeting %q: %v", line, err)
	}
	return line
}

// The raw accept path asks the guard with the peer's real address for
// IPv4 and IPv6 peers, refuses without a byte, serves the others as
// sessions with the right remote address, and stops listening on Close
// (it accepts on a duplicate of the listener's descriptor).
func TestRawAcceptGuardsPeersAndClosesBothDescriptors(t *testing.T) {
	for _, tc := range []struct{ listen, banned, allowed string }{
		{"127.0.0.1:0", "127.0.0.2", "127.0.0.1"},
		{"[::1]:0", "::1", ""},
	} {
		t.Run(tc.listen, func(t *testing.T) {
			g, err := guard.New(quietGuard(), guard.Options{})
			if err != nil {
				t.Fatal(err)
			}
			ban := netip.PrefixFrom(netip.MustParseAddr(tc.banned), netip.MustParseAddr(tc.banned).BitLen())
			if _, err := g.AddBan(ban, time.Hour, "test"); err != nil {
				t.Fatal(err)
			}
			srv, addr, logs := serveGuarded(t, tc.listen, g)

			if got := greeting(t, tc.banned, addr); got != "" {
				t.Fatalf("banned %s got %q", tc.banned, got)
			}
			if tc.allowed == "" { // IPv6 has one loopback address: lift the ban
				g.RemoveBan(ban)
				tc.allowed = tc.banned
			}
			if got := greeting(t, tc.allowed, addr); !strings.HasPrefix(got, "* OK ") {
				t.Fatalf("allowed %s got %q", tc.allowed, got)
			}
			testwait.For(t, "the session to end", func() bool { return srv.Sessions() == 0 })
			if !strings.Contains(logs.String(), "remote="+tc.allowed) {
				t.Errorf("session log lacks remote %s:\n%s", tc.allowed, logs)
			}
			if !strings.Contains(logs.String(), "last_remote="+tc.banned) {
				t.Errorf("refusal summary lacks %s:\n%s", tc.banned, logs)
			}

			srv.Close()
			testwait.For(t, "the port to close", func() bool {
				nc, err := net.DialTimeout("tcp", addr, time.Second)
				if err == nil {
					nc.Close()
					return false
				}
				return errors.Is(err, syscall.ECONNREFUSED)
			})
		})
	}
}
