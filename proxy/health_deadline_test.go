package proxy

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailgate/mailgate/backend"
	"github.com/mailgate/mailgate/internal/testwait"
	"github.com/mailgate/mailgate/policy"
)

// slowGreetIMAP is an IMAP server on 127.0.0.1 that is up but greets
// only after delay (a busy Dovecot), then refuses every LOGIN.
func slowGreetIMAP(t *testing.T, delay time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer nc.Close()
				time.Sleep(delay)
				if _, err := io.WriteString(nc, "* OK [CAPABILITY IMAP4rev1] ready\r\n"); err != nil {
					return
				}
				br := bufio.NewReader(nc)
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					tag, rest, _ := strings.Cut(line, " ")
					reply := tag + " OK done\r\n"
					if strings.HasPrefix(strings.ToUpper(rest), "LOGIN ") {
						reply = tag + " NO [AUTHENTICATIONFAILED] no\r\n"
					}
					if _, err := io.WriteString(nc, reply); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// TestClientLoginDeadlineDoesNotMarkBackendDown: the attempt's context
// ends at the client's own login deadline, which the client chooses (it
// sends its LOGIN just before limits.login_timeout). When that deadline
// ends the backend dial or greeting, the backend is not down: marking it
// down would give every user of the protocol NO [UNAVAILABLE] for 10 s,
// and a client without an account could repeat it every 10 s. Only the
// backend's own bounds (connect_timeout, timeout, a refused connect) may
// mark it down.
func TestClientLoginDeadlineDoesNotMarkBackendDown(t *testing.T) {
	be := &backend.IMAP{Opts: backend.Options{
		Address: slowGreetIMAP(t, 1500*time.Millisecond), TLS: backend.TLSNone,
		ConnectTimeout: 5 * time.Second, Timeout: 10 * time.Second, LoginTimeout: 20 * time.Second,
	}}
	lim := fastLimits()
	lim.LoginTimeout, lim.PreAuthIdleTimeout = time.Second, time.Second
	logs := &syncBuffer{}
	srv := NewServer(Options{
		Logger:     slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Hostname:   "mx.test",
		Authorizer: &fakeAuth{deny: map[string]bool{}},
		IMAP:       be,
		Limits:     lim,
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	errCh := make(chan error, 1)
	go func() {
		errCh <- srv.Serve(ln, Listener{Name: "test", Protocol: policy.IMAP, TLS: tlsNone,
			PlaintextFrom: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	}()
	t.Cleanup(func() {
		srv.Close()
		<-errCh
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	e := &testEnv{t: t, srv: srv, addr: ln.Addr().String(), logs: logs}

	// The client's login deadline (1 s) ends while the backend, which is
	// up, has not greeted yet (1.5 s).
	c := e.dialGreeted()
	c.send("a LOGIN alice secret\r\n")
	if line := c.expect("a NO ["); !strings.HasPrefix(line, "a NO [AUTHENTICATIONFAILED]") {
		t.Fatalf("login cut by its own deadline: %q, want the uniform failure", line)
	}
	testwait.For(t, "the attempt's ERROR line", func() bool { return strings.Contains(logs.String(), `msg="backend unavailable"`) })
	if srv.health.of(policy.IMAP).down() {
		t.Error("a client's own login deadline marked the backend down for every user")
	}
	// Another user right after is not told the server is unavailable.
	c2 := e.dialGreeted()
	c2.send("b LOGIN carol secret\r\n")
	if line := c2.expect("b NO ["); strings.HasPrefix(line, "b NO [UNAVAILABLE]") {
		t.Errorf("next user's login: %q: the first client's deadline turned the backend down", line)
	}
}
