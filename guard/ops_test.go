package guard

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestMaintainSavesAtShutdown(t *testing.T) {
	path := filepath.Join(t.TempDir(), "guard.json")
	g, clk := newTestGuard(t, func(c *Config) { c.StateFile = path })
	if _, err := g.AddBan(netip.MustParsePrefix("192.0.2.0/24"), time.Hour, "x"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		g.Maintain(ctx, time.Hour)
		close(done)
	}()
	cancel()
	<-done
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("no state file after Maintain ended: %v", err)
	}
	if b := restart(t, clk, nil, path).Bans(); len(b) != 1 {
		t.Fatalf("bans from the state Maintain saved = %+v", b)
	}
}

// FuzzOps drives the guard with an arbitrary sequence of calls on a few
// addresses, logins and passwords, and checks what must always hold:
// trusted sources are never banned or locked, the ban index matches the
// bans, and connection counts return to zero.
func FuzzOps(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11})
	f.Add([]byte("\x01\x11\x21\x31\x41\x51\x61\x71\x81\x91\xa1\xb1\xc1\xd1\xe1\xf1\x01\x11\x21\x31"))
	addrs := []netip.Addr{
		netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"),
		netip.MustParseAddr("198.51.100.9"), netip.MustParseAddr("203.0.113.5"), // trusted
		netip.MustParseAddr("2001:db8:1:2::1"), netip.MustParseAddr("2001:db8:1:3::1"),
		netip.MustParseAddr("::ffff:192.0.2.1"), {}, // invalid: no address
	}
	trusted := netip.MustParsePrefix("203.0.113.0/24")
	f.Fuzz(func(t *testing.T, ops []byte) {
		g, clk := newTestGuard(t, func(c *Config) {
			c.TrustedNetworks = []string{trusted.String()}
			c.Ban.IPAfter, c.Ban.NetworkAfter, c.Lockout.After, c.Lockout.PerIPAfter = 3, 5, 4, 2
			c.Compromise.Countries, c.Compromise.Deny = 1, true
			c.Connections = ConnectionsConfig{MaxTotal: 6, MaxPerIP: 2, MaxPerNetwork: 3, MaxPreAuth: 4, MaxPreAuthPerIP: 1}
			c.MaxTracked = 100
		})
		var open []*Conn
		for i, op := range ops {
			if i > 2000 {
				break
			}
			a := addrs[op>>5&7]
			login := fmt.Sprintf("u%d", op>>3&3)
			pw := fmt.Sprintf("p%d", op&7)
			var ev []Event
			switch op % 11 {
			case 0:
				ev = g.failure(login, a, pw)
			case 1:
				ev = g.denied(login, a, pw)
			case 2:
				ev = g.success(login, a, []string{"DE", "FR", "", "private"}[op>>4&3])
			case 3:
				v := g.checkNow(login, a)
				if trusted.Contains(a) && !v.Allow {
					t.Fatalf("trusted %v refused: %+v", a, v)
				}
			case 4:
				c, err := g.Accept(a)
				if trusted.Contains(a) && (errors.Is(err, ErrBanned) || errors.Is(err, ErrDenied)) {
					t.Fatalf("trusted %v refused at accept: %v", a, err)
				}
				if err == nil {
					open = append(open, c)
				}
			case 5:
				if len(open) > 0 {
					open[0].LoggedIn()
				}
			case 6:
				if len(open) > 0 {
					open[len(open)-1].Close()
					open = open[:len(open)-1]
				}
			case 7:
				clk.Advance(time.Duration(op) * time.Minute)
			case 8:
				g.Sweep()
			case 9:
				p, _ := a.Unmap().Prefix(int(op) % (a.Unmap().BitLen() + 1))
				if op&1 == 0 {
					_, _ = g.AddBan(p, time.Duration(op+1)*time.Minute, "fuzz")
				} else {
					g.RemoveBan(p)
				}
			case 10:
				g.Unlock(login)
			}
			for _, e := range ev {
				if e.Kind == EventBanned && e.Prefix.Overlaps(trusted) && e.Prefix.Bits() >= trusted.Bits() {
					t.Fatalf("trusted network banned: %+v", e)
				}
			}
		}
		g.mu.Lock()
		sum := 0
		for _, n := range g.banLens {
			sum += n
		}
		if sum != g.bans.len() {
			t.Fatalf("ban index counts %d, table holds %d", sum, g.bans.len())
		}
		g.mu.Unlock()
		for _, c := range open {
			c.Close()
		}
		if s := g.ConnStats(); s != (ConnStats{}) {
			t.Fatalf("connection counts after closing all: %+v", s)
		}
	})
}
