package guard

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// fakeShared is a Shared that records what the guard asks.
type fakeShared struct {
	mu         sync.Mutex
	up, closed bool
	fail       error
	begins     int
	finishes   []Outcome
}

func (f *fakeShared) Up() bool         { f.mu.Lock(); defer f.mu.Unlock(); return f.up }
func (f *fakeShared) FailClosed() bool { return f.closed }
func (f *fakeShared) Begin(ctx context.Context, q *SharedAttempt) (SharedVerdict, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.begins++
	if f.fail != nil {
		return SharedVerdict{}, f.fail
	}
	q.Lease = "l"
	return SharedVerdict{Allow: true}, nil
}
func (f *fakeShared) Finish(ctx context.Context, q *SharedAttempt, o Outcome, cc string) ([]Event, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.finishes = append(f.finishes, o)
	return nil, f.fail
}
func (f *fakeShared) AddBan(context.Context, Ban) error                     { return nil }
func (f *fakeShared) RemoveBan(context.Context, netip.Prefix) (bool, error) { return false, nil }
func (f *fakeShared) Unlock(context.Context, string) (bool, error)          { return false, nil }
func (f *fakeShared) Lockouts(context.Context) ([]Lockout, error)           { return nil, nil }

func sharedGuard(t *testing.T, f *fakeShared) *Guard {
	t.Helper()
	c := Defaults()
	c.TrustedNetworks = []string{"10.0.0.0/8"}
	c.Tarpit.After = 0
	c.Ban.IPAfter = 3
	g, err := New(c, Options{Shared: f, HashKey: []byte("0123456789abcdef"), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// Trusted sources never reach the store; untrusted ones ask it once at
// the start and once at the end of an attempt.
func TestSharedSeamRoundTrips(t *testing.T) {
	f := &fakeShared{up: true}
	g := sharedGuard(t, f)
	a := g.Attempt("u", netip.MustParseAddr("10.1.2.3"), "pw")
	a.Begin(context.Background())
	a.Finish(WrongPassword, "")
	if f.begins != 0 || len(f.finishes) != 0 {
		t.Fatalf("a trusted source asked the store: %d begins, %v finishes", f.begins, f.finishes)
	}
	a = g.Attempt("u", netip.MustParseAddr("192.0.2.1"), "pw")
	if v := a.Begin(context.Background()); !v.Allow {
		t.Fatalf("refused: %+v", v)
	}
	a.Finish(WrongPassword, "")
	a.Finish(WrongPassword, "") // once
	if f.begins != 1 || len(f.finishes) != 1 || f.finishes[0] != WrongPassword {
		t.Fatalf("%d begins, finishes %v; want 1 and [WrongPassword]", f.begins, f.finishes)
	}
}

// A store that fails mid-call leaves the decision to local state (fail
// open); with fail_closed the login is refused and not counted.
func TestSharedSeamFailOpenAndClosed(t *testing.T) {
	f := &fakeShared{up: true, fail: errors.New("store gone")}
	g := sharedGuard(t, f)
	src := netip.MustParseAddr("192.0.2.2")
	var evs []Event
	for i := range 3 {
		a := g.Attempt("u", src, "pw"+string(rune('0'+i)))
		if v := a.Begin(context.Background()); !v.Allow {
			t.Fatalf("attempt %d refused with the store failing (fail open): %+v", i, v)
		}
		evs = append(evs, a.Finish(WrongPassword, "")...)
	}
	if len(evs) != 1 || evs[0].Kind != EventBanned {
		t.Fatalf("local state did not ban: %+v", evs)
	}
	if got := g.TakeUnsynced(); len(got) != 1 || got[0].Prefix.Addr() != src {
		t.Fatalf("the ban made alone is not kept for the store: %+v", got)
	}

	f2 := &fakeShared{up: false, closed: true}
	g2 := sharedGuard(t, f2)
	for i := range 5 {
		a := g2.Attempt("u", src, "pw"+string(rune('0'+i)))
		v := a.Begin(context.Background())
		if v.Allow || !v.Waited {
			t.Fatalf("fail_closed with the store down: %+v, want a refusal not counted", v)
		}
		if evs := a.Finish(Refused, ""); len(evs) != 0 {
			t.Fatalf("fail_closed refusals were counted: %+v", evs)
		}
	}
	if c, err := g2.Accept(src); err != nil {
		t.Fatalf("fail_closed refused a connection: %v", err)
	} else {
		c.Close()
	}
}

// BenchmarkAcceptBanned is refusing a banned source at accept, with the
// in-memory guard and with a shared store plugged in (its bans applied
// as the feed applies them): the same local lookup, no round trip.
func BenchmarkAcceptBanned(b *testing.B) {
	for _, name := range []string{"memory", "shared"} {
		b.Run(name, func(b *testing.B) {
			c := Defaults()
			o := Options{}
			if name == "shared" {
				o.Shared, o.HashKey = &fakeShared{up: true}, []byte("0123456789abcdef")
			}
			g, err := New(c, o)
			if err != nil {
				b.Fatal(err)
			}
			var addrs []netip.Addr
			for i := range 1000 {
				a := netip.AddrFrom4([4]byte{172, 16, byte(i >> 8), byte(i)})
				addrs = append(addrs, a)
				ban := Ban{Prefix: netip.PrefixFrom(a, 32), Created: time.Now(), Until: time.Now().Add(time.Hour), Reason: "b"}
				if name == "shared" {
					g.ApplyBan(ban)
				} else {
					g.mu.Lock()
					g.putBan(ban)
					g.mu.Unlock()
				}
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if _, err := g.Accept(addrs[i%len(addrs)]); err == nil {
					b.Fatal("accepted a banned source")
				}
				i++
			}
		})
	}
}
