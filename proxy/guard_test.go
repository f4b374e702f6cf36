package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailgate/mailgate/backend"
	"github.com/mailgate/mailgate/guard"
	"github.com/mailgate/mailgate/internal/testwait"
)

// countingIMAP counts every backend login attempt, refused or not, and
// can hold logins until released.
type countingIMAP struct {
	next  IMAPBackend
	calls atomic.Int64
	hold  chan struct{} // when non-nil, each login waits for a receive
}

func (c *countingIMAP) Login(ctx context.Context, bc backend.Client, tag, user, pass string) (*backend.Session, error) {
	c.calls.Add(1)
	if c.hold != nil {
		select {
		case <-c.hold:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return c.next.Login(ctx, bc, tag, user, pass)
}

// quietGuard is a guard config with only the action under test on.
func quietGuard() guard.Config {
	c := guard.Defaults()
	c.Tarpit.After = 0
	c.Ban.IPAfter = 0
	c.Ban.NetworkAfter = 0
	c.Lockout.After = 0
	c.Lockout.PerIPAfter = 0
	c.Compromise.Countries = 0
	c.FailurePenalty.Init = 0
	return c
}

// startGuarded runs a test server behind a trusted-PROXY listener with
// guard g and a counting backend.
func startGuarded(t testing.TB, cfg guard.Config) (*testEnv, *guard.Guard, *countingIMAP) {
	t.Helper()
	anywhere := []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}
	trusted := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	lim := fastLimits()
	lim.MaxLoginAttempts = 100
	e := startServer(t, Listener{TLS: tlsNone, PlaintextFrom: anywhere, ProxyFrom: trusted}, lim)
	g, err := guard.New(cfg, guard.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ci := &countingIMAP{next: e.imap}
	o := *e.srv.options()
	o.Guard = g
	o.IMAP = ci
	e.srv.Update(o)
	return e, g, ci
}

// dialFrom connects claiming src in a PROXY v1 header.
func (e *testEnv) dialFrom(src string) *client {
	c := e.dial()
	c.send("PROXY TCP4 " + src + " 127.0.0.1 5555 143\r\n")
	return c
}

func TestGuardBanClosesBeforeGreeting(t *testing.T) {
	cfg := quietGuard()
	cfg.Ban.IPAfter = 3
	e, g, ci := startGuarded(t, cfg)
	c := e.dialFrom("203.0.113.7")
	c.expect("* OK [CAPABILITY")
	for i := range 3 {
		c.send("a LOGIN alice wrong" + string(rune('0'+i)) + "\r\n")
		c.expect("a NO [AUTHENTICATIONFAILED]")
	}
	// The ban refuses the rest of this session's attempts, backend untouched.
	c.send("b LOGIN alice secret\r\n")
	c.expect("b NO [AUTHENTICATIONFAILED]")
	if n := ci.calls.Load(); n != 3 {
		t.Errorf("backend saw %d logins, want 3 (the ban must stop the 4th)", n)
	}
	// A new connection from the banned source gets nothing at all.
	e.dialFrom("203.0.113.7").expectClosed()
	// Another source is unaffected.
	c2 := e.dialFrom("203.0.113.8")
	c2.expect("* OK [CAPABILITY")
	c2.send("a LOGIN alice secret\r\n")
	c2.expect("a OK")
	if len(g.Bans()) != 1 {
		t.Errorf("bans %v, want one", g.Bans())
	}
	testwait.For(t, "BANNED line", func() bool {
		return strings.Contains(e.logs.String(), "msg=BANNED remote=203.0.113.7 prefix=203.0.113.7/32")
	})
	testwait.For(t, "refusal logged", func() bool {
		return strings.Contains(e.logs.String(), `msg="connection refused by guard"`)
	})
	if strings.Contains(e.logs.String(), "wrong0") {
		t.Error("password in the log")
	}
}

func TestGuardRefusalLooksLikeWrongPassword(t *testing.T) {
	cfg := quietGuard()
	cfg.Lockout.PerIPAfter = 2
	e, _, ci := startGuarded(t, cfg)
	c := e.dialFrom("203.0.113.9")
	c.expect("* OK [CAPABILITY")
	c.send("a LOGIN alice wrong1\r\n")
	wrong := c.line()
	c.send("a LOGIN alice wrong2\r\n")
	c.line()
	// Blocked now: the right password is refused with the same words.
	c.send("a LOGIN alice secret\r\n")
	refused := c.line()
	if strip(wrong) != strip(refused) {
		t.Errorf("guard refusal %q differs from wrong password %q", refused, wrong)
	}
	if n := ci.calls.Load(); n != 2 {
		t.Errorf("backend saw %d logins, want 2", n)
	}
	testwait.For(t, "refusal logged", func() bool {
		return strings.Contains(e.logs.String(), `msg=AUTHFAILED`) && strings.Contains(e.logs.String(), `reason="guard: `)
	})
	// Another login from the same address is not blocked.
	e.imap.users["carol"] = "pw"
	c.send("b LOGIN carol pw\r\n")
	c.expect("b OK")
}

// strip drops the session id, which differs per connection only.
func strip(s string) string { s, _, _ = strings.Cut(s, " (id "); return s }

func TestGuardTrustedNetworkNeverBanned(t *testing.T) {
	cfg := quietGuard()
	cfg.Ban.IPAfter = 2
	cfg.TrustedNetworks = []string{"198.51.100.0/24"}
	e, g, _ := startGuarded(t, cfg)
	for i := range 5 {
		c := e.dialFrom("198.51.100.20")
		c.expect("* OK [CAPABILITY")
		c.send("a LOGIN alice wrong" + string(rune('a'+i)) + "\r\n")
		c.expect("a NO [AUTHENTICATIONFAILED]")
		c.nc.Close()
	}
	c := e.dialFrom("198.51.100.20")
	c.expect("* OK [CAPABILITY")
	c.send("a LOGIN alice secret\r\n")
	c.expect("a OK")
	if b := g.Bans(); len(b) != 0 {
		t.Errorf("trusted source banned: %v", b)
	}
}

func TestGuardCountryDenialCountsTowardsBan(t *testing.T) {
	cfg := quietGuard()
	cfg.Ban.IPAfter = 2
	e, _, ci := startGuarded(t, cfg)
	e.imap.users["bob"] = "right" // fakeAuth denies bob's country
	c := e.dialFrom("203.0.113.30")
	c.expect("* OK [CAPABILITY")
	c.send("a LOGIN bob right\r\n")
	c.expect("a NO [AUTHENTICATIONFAILED]")
	c.send("a LOGIN bob other\r\n")
	c.expect("a NO [AUTHENTICATIONFAILED]")
	if n := ci.calls.Load(); n != 0 {
		t.Errorf("denied country reached the backend %d times", n)
	}
	e.dialFrom("203.0.113.30").expectClosed()
}

func TestGuardBackendSlotsFull(t *testing.T) {
	cfg := quietGuard()
	cfg.Backend = guard.BackendConfig{MaxConcurrent: 1, Queue: 1, QueueWait: 50 * time.Millisecond}
	e, _, ci := startGuarded(t, cfg)
	ci.hold = make(chan struct{})
	first := e.dialFrom("203.0.113.40")
	first.expect("* OK [CAPABILITY")
	first.send("a LOGIN alice secret\r\n")
	testwait.For(t, "first login at the backend", func() bool { return ci.calls.Load() == 1 })
	second := e.dialFrom("203.0.113.41")
	second.expect("* OK [CAPABILITY")
	second.send("b LOGIN alice secret\r\n")
	// After the decision: the same reply as any failure (health.go).
	second.expect("b NO [AUTHENTICATIONFAILED]")
	close(ci.hold)
	first.expect("a OK")
	// The slot is free again.
	second.send("c LOGIN alice secret\r\n")
	second.expect("c OK")
}

func TestGuardFingerprintOnAuthFailed(t *testing.T) {
	cfg := quietGuard()
	cfg.FingerprintSecretFile = filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(cfg.FingerprintSecretFile, []byte("0123456789abcdef0123"), 0o600); err != nil {
		t.Fatal(err)
	}
	e, g, _ := startGuarded(t, cfg)
	c := e.dialFrom("203.0.113.50")
	c.expect("* OK [CAPABILITY")
	c.send("a LOGIN alice hunter2\r\n")
	c.expect("a NO [AUTHENTICATIONFAILED]")
	want := "pwfp=" + g.Fingerprint("hunter2")
	testwait.For(t, "fingerprint on AUTHFAILED", func() bool {
		for _, l := range strings.Split(e.logs.String(), "\n") {
			if strings.Contains(l, "msg=AUTHFAILED") && strings.Contains(l, want) {
				return true
			}
		}
		return false
	})
	if strings.Contains(e.logs.String(), "hunter2") {
		t.Error("password in the log")
	}
}

func TestGuardTarpitHoldsAllowedAttempts(t *testing.T) {
	cfg := quietGuard()
	cfg.Tarpit = guard.TarpitConfig{After: 1, Step: time.Hour, Max: time.Hour}
	e, _, ci := startGuarded(t, cfg)
	lim := e.srv.options().Limits
	lim.LoginTimeout = 300 * time.Millisecond
	o := *e.srv.options()
	o.Limits = lim
	e.srv.Update(o)
	c := e.dialFrom("203.0.113.60")
	c.expect("* OK [CAPABILITY")
	c.send("a LOGIN alice wrong\r\n")
	c.expect("a NO [AUTHENTICATIONFAILED]")
	// The next attempt is held by the tarpit; the login deadline, not
	// the hour, bounds it, and the backend is never asked.
	c.send("b LOGIN alice secret\r\n")
	c.expect("b NO [AUTHENTICATIONFAILED]")
	if n := ci.calls.Load(); n != 1 {
		t.Errorf("backend saw %d logins during the tarpit, want 1", n)
	}
}

// BenchmarkGuardedLogin is BenchmarkLogin with the guard at its defaults
// on every call point (accept, check, backend slot, success); the
// difference between the two is the guard's cost per login.
func BenchmarkGuardedLogin(b *testing.B) {
	e := startServer(b, Listener{}, fastLimits())
	g, err := guard.New(guard.Defaults(), guard.Options{})
	if err != nil {
		b.Fatal(err)
	}
	o := *e.srv.options()
	o.Guard = g
	e.srv.Update(o)
	b.ReportAllocs()
	for b.Loop() {
		nc, err := net.Dial("tcp", e.addr)
		if err != nil {
			b.Fatal(err)
		}
		br := bufio.NewReader(nc)
		br.ReadString('\n')
		io.WriteString(nc, "a LOGIN alice secret\r\nb LOGOUT\r\n")
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				b.Fatalf("read: %v", err)
			}
			if l == "* BYE bye\r\n" {
				break
			}
		}
		nc.Close()
		<-e.imap.lines // b LOGOUT
	}
}

// BenchmarkGuardRefusedAtAccept measures a connection from a banned
// source: accepted, refused by the guard and closed, with no greeting
// and no TLS. Compare with BenchmarkGuardGreeted, the same connection
// from a source that is not banned, up to its greeting.
func BenchmarkGuardRefusedAtAccept(b *testing.B) {
	benchAccept(b, true)
}

// BenchmarkGuardGreeted: connect and read the greeting (implicit TLS
// listener, so the handshake is included), then close.
func BenchmarkGuardGreeted(b *testing.B) {
	benchAccept(b, false)
}

func benchAccept(b *testing.B, banned bool) {
	e := startServer(b, Listener{TLS: tlsImplicit}, fastLimits())
	g, err := guard.New(guard.Defaults(), guard.Options{})
	if err != nil {
		b.Fatal(err)
	}
	if banned {
		if _, err := g.AddBan(netip.MustParsePrefix("127.0.0.1/32"), time.Hour, "bench"); err != nil {
			b.Fatal(err)
		}
	}
	o := *e.srv.options()
	o.Guard = g
	e.srv.Update(o)
	tc := &tls.Config{InsecureSkipVerify: true}
	b.ReportAllocs()
	for b.Loop() {
		nc, err := net.Dial("tcp", e.addr)
		if err != nil {
			b.Fatal(err)
		}
		if banned {
			if n, _ := nc.Read(make([]byte, 1)); n != 0 {
				b.Fatal("banned source got bytes")
			}
		} else {
			c := tls.Client(nc, tc)
			if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
				b.Fatal(err)
			}
		}
		nc.Close()
	}
}

func TestGuardPOP3RefusalLooksLikeWrongPassword(t *testing.T) {
	lim := fastLimits()
	lim.MaxLoginAttempts = 5
	e := startServer(t, Listener{Protocol: pop3Proto}, lim)
	cfg := quietGuard()
	cfg.Lockout.PerIPAfter = 1
	g, err := guard.New(cfg, guard.Options{})
	if err != nil {
		t.Fatal(err)
	}
	o := *e.srv.options()
	o.Guard = g
	e.srv.Update(o)
	c := e.dialPOP3()
	c.send("USER alice\r\nPASS wrong\r\n")
	c.expect("+OK")
	wrong := c.line()
	// Blocked for alice at this address now: the right password gets
	// the same answer and never reaches the backend.
	c.send("USER alice\r\nPASS secret\r\n")
	c.expect("+OK")
	refused := c.line()
	if !strings.HasPrefix(wrong, "-ERR [AUTH] ") || strip(wrong) != strip(refused) {
		t.Errorf("guard refusal %q, wrong password %q; want the same -ERR [AUTH]", refused, wrong)
	}
	if got := e.pop3.loginList(); len(got) != 0 {
		t.Errorf("backend logins %q", got)
	}
}
