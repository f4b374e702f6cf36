package proxy

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/internal/testwait"
	"github.com/mailgate/mailgate/policy"
)

func TestStartTLSInjectionIsDiscarded(t *testing.T) {
	checkNoLeak(t)
	e := startServer(t, Listener{TLS: tlsStartTLS}, fastLimits())
	c := e.dialGreeted()
	c.send("a LOGIN alice secret\r\n")
	c.expect("a NO [PRIVACYREQUIRED] ")
	c.send("a STARTTLS\r\nb LOGIN alice secret\r\nc CAPABILITY\r\n")
	c.expect("a OK Begin TLS")
	c.startTLS()
	c.send("d CAPABILITY\r\n")
	caps := c.expect("* CAPABILITY ")
	if strings.Contains(caps, "STARTTLS") || strings.Contains(caps, "LOGINDISABLED") || !strings.Contains(caps, "AUTH=PLAIN") {
		t.Errorf("capabilities after STARTTLS: %q", caps)
	}
	// The first reply after TLS answers d: b and c were never executed.
	c.expect("d OK CAPABILITY")
	if n := len(e.auth.requests()); n != 0 {
		t.Fatalf("injected LOGIN reached policy (%d decisions)", n)
	}
	c.send("e STARTTLS\r\n")
	c.expect("e BAD ")
	c.send("f LOGIN alice secret\r\n")
	c.expect("f OK [CAPABILITY")
	testwait.For(t, "discard log", func() bool {
		return strings.Contains(e.logs.String(), `msg="discarded bytes pipelined after STARTTLS"`)
	})
}

func TestPlaintextFromAllowsLoginWithoutTLS(t *testing.T) {
	e := startServer(t, Listener{TLS: tlsStartTLS, PlaintextFrom: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}, fastLimits())
	c := e.dialGreeted()
	c.send("a LOGIN alice secret\r\n")
	c.expect("a OK [CAPABILITY")
}

func TestNoneListenerRefusesLogin(t *testing.T) {
	e := startServer(t, Listener{TLS: tlsNone, PlaintextFrom: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}, fastLimits())
	c := e.dialGreeted()
	c.send("a LOGIN alice secret\r\nb AUTHENTICATE PLAIN\r\nc STARTTLS\r\n")
	c.expect("a NO [PRIVACYREQUIRED] Login disabled without TLS")
	c.expect("b NO [PRIVACYREQUIRED]")
	c.expect("c BAD ")
}

// proxyV2 builds a PROXY v2 TCP4 header.
func proxyV2(src, dst netip.AddrPort) []byte {
	b := []byte("\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c")
	s4, d4 := src.Addr().As4(), dst.Addr().As4()
	b = append(b, s4[:]...)
	b = append(b, d4[:]...)
	b = binary.BigEndian.AppendUint16(b, src.Port())
	return binary.BigEndian.AppendUint16(b, dst.Port())
}

func TestProxyHeader(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	other := []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
	anywhere := []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}
	anywhere6 := []netip.Prefix{netip.MustParsePrefix("::/0")}
	lastAddr := func(e *testEnv) netip.Addr {
		r := e.auth.requests()
		if len(r) == 0 {
			t.Fatal("no decision")
		}
		return r[len(r)-1].Addr
	}

	t.Run("trusted v1", func(t *testing.T) {
		e := startServer(t, Listener{TLS: tlsNone, PlaintextFrom: anywhere, ProxyFrom: trusted}, fastLimits())
		c := e.dial()
		c.send("PROXY TCP4 203.0.113.7 127.0.0.1 5555 143\r\n")
		c.expect("* OK [CAPABILITY")
		c.send("a LOGIN alice secret\r\n")
		c.expect("a OK")
		if got := lastAddr(e); got != netip.MustParseAddr("203.0.113.7") {
			t.Errorf("Decide saw %v", got)
		}
		testwait.For(t, "log", func() bool { return strings.Contains(e.logs.String(), "remote=203.0.113.7") })
	})
	t.Run("trusted v1 TCP6", func(t *testing.T) {
		e := startServer(t, Listener{TLS: tlsNone, PlaintextFrom: anywhere6, ProxyFrom: trusted}, fastLimits())
		c := e.dial()
		c.send("PROXY TCP6 2001:db8::7 ::1 5555 143\r\na LOGIN alice secret\r\n")
		c.expect("* OK")
		c.expect("a OK")
		if got := lastAddr(e); got != netip.MustParseAddr("2001:db8::7") {
			t.Errorf("Decide saw %v", got)
		}
	})
	t.Run("trusted v2 with pipelined login", func(t *testing.T) {
		e := startServer(t, Listener{TLS: tlsNone, PlaintextFrom: anywhere, ProxyFrom: trusted}, fastLimits())
		c := e.dial()
		c.send(string(proxyV2(netip.MustParseAddrPort("198.51.100.9:4444"), netip.MustParseAddrPort("127.0.0.1:143"))))
		c.expect("* OK")
		c.send("a LOGIN bob x\r\n")
		c.expect("a NO [AUTHENTICATIONFAILED]")
		if got := lastAddr(e); got != netip.MustParseAddr("198.51.100.9") {
			t.Errorf("Decide saw %v", got)
		}
	})
	t.Run("trusted UNKNOWN keeps the peer address", func(t *testing.T) {
		e := startServer(t, Listener{TLS: tlsNone, PlaintextFrom: anywhere, ProxyFrom: trusted}, fastLimits())
		c := e.dial()
		c.send("PROXY UNKNOWN\r\n")
		c.expect("* OK")
		c.send("a LOGIN alice secret\r\n")
		c.expect("a OK")
		if got := lastAddr(e); got != netip.MustParseAddr("127.0.0.1") {
			t.Errorf("Decide saw %v", got)
		}
	})
	t.Run("trusted but missing or malformed", func(t *testing.T) {
		e := startServer(t, Listener{TLS: tlsNone, PlaintextFrom: anywhere, ProxyFrom: trusted}, fastLimits())
		c := e.dial()
		c.send("a LOGIN alice secret\r\n")
		c.expectClosed()
		c = e.dial()
		c.send("PROXY TCP4 999.1.1.1 127.0.0.1 1 2\r\n")
		c.expectClosed()
		if n := len(e.auth.requests()); n != 0 {
			t.Errorf("%d decisions", n)
		}
	})
	t.Run("untrusted plaintext", func(t *testing.T) {
		e := startServer(t, Listener{ProxyFrom: other}, fastLimits())
		for _, hdr := range []string{"PROXY TCP4 203.0.113.7 127.0.0.1 5555 143\r\n", string(proxyV2(netip.MustParseAddrPort("198.51.100.9:4444"), netip.MustParseAddrPort("127.0.0.1:143")))} {
			c := e.dialGreeted()
			c.send(hdr + "a LOGIN alice secret\r\n")
			c.expectClosed()
		}
		if n := len(e.auth.requests()); n != 0 {
			t.Errorf("%d decisions", n)
		}
		testwait.For(t, "log", func() bool { return strings.Contains(e.logs.String(), "PROXY header from untrusted peer") })
	})
	t.Run("untrusted implicit TLS", func(t *testing.T) {
		e := startServer(t, Listener{TLS: tlsImplicit}, fastLimits())
		c := e.dial()
		c.send("PROXY TCP4 203.0.113.7 127.0.0.1 5555 993\r\n")
		c.expectClosed()
		testwait.For(t, "log", func() bool { return strings.Contains(e.logs.String(), "PROXY header from untrusted peer") })
	})
}

// loginSpliced returns a client logged in through the fake backend.
func loginSpliced(t *testing.T, e *testEnv) *client {
	t.Helper()
	c := e.dialGreeted()
	c.send("a LOGIN alice secret\r\n")
	c.expect("a OK [CAPABILITY")
	return c
}

func TestSpliceHalfClose(t *testing.T) {
	checkNoLeak(t)
	e := startServer(t, Listener{}, fastLimits())
	got := make(chan string, 1)
	e.imap.script = func(nc net.Conn) {
		defer nc.Close()
		// Read everything the client sends until its half-close, then
		// answer: only possible if EOF was passed on, not a full close.
		b, _ := io.ReadAll(nc)
		got <- string(b)
		io.WriteString(nc, "* answer after EOF\r\n")
	}
	c := loginSpliced(t, e)
	c.send("x APPEND\r\nline two\r\n")
	c.nc.(*net.TCPConn).CloseWrite()
	select {
	case s := <-got:
		if s != "x APPEND\r\nline two\r\n" {
			t.Errorf("backend got %q", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("backend never saw EOF")
	}
	c.expect("* answer after EOF")
	c.expectClosed()
	testwait.For(t, "close", func() bool { return e.srv.Sessions() == 0 })
}

func TestSpliceIdleTimeout(t *testing.T) {
	checkNoLeak(t)
	lim := fastLimits()
	lim.IdleTimeout = 400 * time.Millisecond
	e := startServer(t, Listener{}, lim)
	c := loginSpliced(t, e)
	// Traffic keeps the session open past one idle period (gaps are far
	// below the timeout so a loaded machine does not make this flaky)...
	start := time.Now()
	for time.Since(start) < 2*lim.IdleTimeout {
		c.send("n NOOP\r\n")
		c.expect("* ECHO n NOOP")
		time.Sleep(20 * time.Millisecond)
	}
	// ...and silence ends it.
	c.expectClosed()
	testwait.For(t, "close log", func() bool { return strings.Contains(e.logs.String(), `reason="idle timeout"`) })
}

func TestShutdown(t *testing.T) {
	checkNoLeak(t)
	e := startServer(t, Listener{}, fastLimits())
	pre := e.dialGreeted()
	spliced := loginSpliced(t, e)

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- e.srv.Shutdown(ctx) }()

	pre.expect("* BYE Server shutting down")
	pre.expectClosed()
	// The spliced session still works while draining...
	spliced.send("s NOOP\r\n")
	spliced.expect("* ECHO s NOOP")
	// ...until the shutdown deadline closes it.
	spliced.expectClosed()
	if err := <-done; !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want DeadlineExceeded", err)
	}
	if _, err := net.Dial("tcp", e.addr); err == nil {
		t.Error("listener still accepting")
	}
	testwait.For(t, "sessions", func() bool { return e.srv.Sessions() == 0 })
	if err := e.srv.Shutdown(context.Background()); err != nil {
		t.Errorf("second Shutdown = %v", err)
	}
}

func TestShutdownWithoutSessionsReturnsNil(t *testing.T) {
	e := startServer(t, Listener{}, fastLimits())
	if err := e.srv.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown = %v", err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	if err := e.srv.Serve(ln, e.lst); !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve after Shutdown = %v", err)
	}
}

func TestUpdateAppliesToNewAttempts(t *testing.T) {
	e := startServer(t, Listener{}, fastLimits())
	c := e.dialGreeted()
	o := *e.srv.options()
	deny := &fakeAuth{deny: map[string]bool{"alice": true}}
	o.Authorizer = deny
	e.srv.Update(o)
	c.send("a LOGIN alice secret\r\n")
	c.expect("a NO [AUTHENTICATIONFAILED]")
	if len(deny.requests()) != 1 || len(e.auth.requests()) != 0 {
		t.Errorf("attempt after Update did not use the new authorizer")
	}
}

func TestServeRejectsBadListener(t *testing.T) {
	s := NewServer(Options{})
	for _, l := range []Listener{
		{Name: "x", Protocol: policy.IMAP, TLS: "bogus"},
		{Name: "x", Protocol: policy.IMAP, TLS: tlsImplicit},
		{Name: "x", Protocol: "nntp", TLS: tlsNone},
	} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Serve(ln, l); err == nil || errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve(%+v) = %v", l, err)
		}
	}
}

func TestManySessionsNoLeak(t *testing.T) {
	checkNoLeak(t)
	e := startServer(t, Listener{}, fastLimits())
	for i := 0; i < 20; i++ {
		c := e.dial()
		br := bufio.NewReader(c.nc)
		br.ReadString('\n')
		if i%2 == 0 {
			io.WriteString(c.nc, "a LOGIN alice secret\r\nb LOGOUT\r\n")
		} else {
			io.WriteString(c.nc, "a LOGOUT\r\n")
		}
		c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		io.ReadAll(br)
		c.nc.Close()
	}
	testwait.For(t, "sessions", func() bool { return e.srv.Sessions() == 0 })
}

func TestTLSHandshakeTimeout(t *testing.T) {
	lim := fastLimits()
	lim.TLSHandshakeTimeout = 100 * time.Millisecond
	e := startServer(t, Listener{TLS: tlsImplicit}, lim)
	c := e.dial() // says nothing
	c.expectClosed()
	c = e.dial()
	c.send("a CAPABILITY\r\n") // not TLS
	c.expectClosed()
	testwait.For(t, "log", func() bool { return strings.Count(e.logs.String(), `msg="TLS handshake failed"`) == 2 })
}

func TestUpdateKeepsLimitsOfOpenConnections(t *testing.T) {
	lim := fastLimits()
	lim.MaxCommands = 3
	e := startServer(t, Listener{}, lim)
	old := e.dialGreeted()
	o := *e.srv.options()
	o.Limits.MaxCommands = 1
	e.srv.Update(o)
	// The open connection keeps MaxCommands 3...
	old.send("a NOOP\r\nb NOOP\r\nc NOOP\r\nd NOOP\r\n")
	for _, tag := range []string{"a", "b", "c"} {
		old.expect(tag + " OK")
	}
	old.expect("* BYE Too many commands")
	// ...a new one gets 1.
	c := e.dialGreeted()
	c.send("a NOOP\r\nb NOOP\r\n")
	c.expect("a OK")
	c.expect("* BYE Too many commands")
}

// The splice idle timeout is reset by traffic in either direction alone:
// a silent client in IDLE receiving updates, and a client uploading to a
// backend that answers only at the end, both outlive several idle periods.
func TestSpliceIdleResetByOneWayTraffic(t *testing.T) {
	for _, dir := range []string{"backend to client", "client to backend"} {
		t.Run(dir, func(t *testing.T) {
			checkNoLeak(t)
			lim := fastLimits()
			lim.IdleTimeout = 300 * time.Millisecond
			e := startServer(t, Listener{}, lim)
			const rounds = 30 // 30 x 30 ms: three idle periods
			done := make(chan struct{})
			e.imap.script = func(nc net.Conn) {
				defer nc.Close()
				br := bufio.NewReader(nc)
				if dir == "backend to client" {
					for i := 0; i < rounds; i++ {
						if _, err := fmt.Fprintf(nc, "* %d EXISTS\r\n", i); err != nil {
							return
						}
						time.Sleep(30 * time.Millisecond)
					}
					io.WriteString(nc, "* done\r\n")
				} else {
					for i := 0; i < rounds; i++ {
						if _, err := br.ReadString('\n'); err != nil {
							return
						}
					}
					io.WriteString(nc, "* done\r\n")
				}
				<-done
			}
			c := loginSpliced(t, e)
			if dir == "backend to client" {
				for i := 0; i < rounds; i++ {
					c.expect(fmt.Sprintf("* %d EXISTS", i))
				}
			} else {
				for i := 0; i < rounds; i++ {
					c.send("upload line\r\n")
					time.Sleep(30 * time.Millisecond)
				}
			}
			c.expect("* done")
			close(done)
			c.expectClosed()
			testwait.For(t, "sessions", func() bool { return e.srv.Sessions() == 0 })
		})
	}
}

// openFDs counts this process's open file descriptors (Linux).
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count file descriptors here: %v", err)
	}
	return len(ents)
}

// No socket outlives its session, however the session ends: logout
// before login, refused login, logout through the splice, or a client
// that drops a spliced session without a word.
func TestSessionsLeaveNoFileDescriptors(t *testing.T) {
	checkNoLeak(t)
	e := startServer(t, Listener{}, fastLimits())
	// One session first, so lazily opened descriptors (poller) exist.
	c := e.dialGreeted()
	c.send("a LOGOUT\r\n")
	c.expect("* BYE")
	c.expect("a OK")
	c.expectClosed()
	c.nc.Close()
	testwait.For(t, "sessions", func() bool { return e.srv.Sessions() == 0 })
	before := openFDs(t)
	for i := 0; i < 24; i++ {
		c := e.dialGreeted()
		switch i % 4 {
		case 0:
			c.send("a LOGOUT\r\n")
			c.expect("* BYE")
		case 1:
			c.send("a LOGIN alice wrong\r\n")
			c.expect("a NO")
		case 2:
			c.send("a LOGIN alice secret\r\n")
			c.expect("a OK")
			c.send("b LOGOUT\r\n")
			c.expect("* ECHO b LOGOUT")
			c.expect("* BYE")
			c.expectClosed()
		case 3:
			c.send("a LOGIN alice secret\r\n")
			c.expect("a OK")
			c.send("b NOOP\r\n")
			c.expect("* ECHO b NOOP")
		}
		c.nc.Close()
	}
	testwait.For(t, "sessions", func() bool { return e.srv.Sessions() == 0 })
	testwait.For(t, "file descriptors back to the level before", func() bool { return openFDs(t) <= before })
}

// Under LOGINDISABLED a LOGIN with a synchronizing literal is refused
// before the "+", so neither name nor password is sent in the clear;
// the session goes on and can still upgrade.
func TestLoginLiteralRefusedBeforeTLS(t *testing.T) {
	e := startServer(t, Listener{TLS: tlsStartTLS}, fastLimits())
	c := e.dialGreeted()
	c.send("a LOGIN {5}\r\n")
	c.expect("a NO [PRIVACYREQUIRED] ")
	c.send("b login alice {6}\r\n")
	c.expect("b NO [PRIVACYREQUIRED] ")
	// Other commands' literals are read as before (and refused as unknown).
	c.send("c APPEND INBOX {3}\r\n")
	c.expect("+ ")
	c.send("abc\r\n")
	c.expect("c BAD ")
	c.send("d STARTTLS\r\n")
	c.expect("d OK")
	c.startTLS()
	c.send("e LOGIN {5}\r\n")
	c.expect("+ ")
	c.send("alice {6}\r\n")
	c.expect("+ ")
	c.send("secret\r\n")
	c.expect("e OK [CAPABILITY")
	if n := len(e.auth.requests()); n != 1 {
		t.Errorf("%d policy decisions, want 1 (the login after TLS)", n)
	}
}
