package guard

import (
	"context"
	"net/netip"
	"testing"
	"time"
)

// Wrong passwords known by a hash lock a login as plain ones do, count
// distinct hashes only, and live in their own namespace: a hash equal
// to a password the proxy saw is still a distinct failure.
func TestAttemptHashedCountsDistinctHashes(t *testing.T) {
	c := Defaults()
	c.Lockout.After = 3
	c.Lockout.PerIPAfter = 0
	c.Ban.IPAfter, c.Ban.NetworkAfter = 0, 0
	c.Tarpit.After = 0
	g, err := New(c, Options{})
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.MustParseAddr("192.0.2.7")
	fail := func(a *Attempt) {
		t.Helper()
		if v := a.Begin(context.Background()); !v.Allow {
			t.Fatalf("refused too early: %s", v.Reason)
		}
		a.Finish(WrongPassword, "")
	}
	// The same hash three times counts once; a proxy password spelled
	// like a hash counts apart from it.
	for range 3 {
		fail(g.AttemptHashed("dovecot", "u@example.test", addr, "0abc"))
	}
	fail(g.Attempt("u@example.test", addr, "0abc"))
	a := g.AttemptHashed("dovecot", "u@example.test", addr, "0def")
	if v := a.Begin(context.Background()); !v.Allow {
		t.Fatalf("locked after 2 distinct failures: %s", v.Reason)
	}
	a.Finish(Abandoned, "")
	fail(g.AttemptHashed("dovecot", "u@example.test", addr, "0123"))
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if v := g.AttemptHashed("dovecot", "u@example.test", addr, "0456").Begin(ctx); v.Allow || !v.Locked {
		t.Fatalf("after 3 distinct wrong passwords: %+v, want locked", v)
	}
}
