package main

import (
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/mailgate/mailgate/audit"
	"github.com/mailgate/mailgate/guard"
)

// The compromise signal (too many countries for one login) reads the
// countries of earlier successes from the login history, so a restart
// does not reset it (issue #17). A real database file: one process wrote
// alice's passes from GB and DE and stopped; a new guard, wired as serve
// wires it, sees her next success, from FR, as the third country.
func TestCompromiseSignalSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.db")
	st, err := audit.Open(audit.Config{Path: path}, audit.Options{Node: "mx1", DefaultDomain: "example.com"})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	for i, src := range []struct{ cc, addr string }{{"GB", "81.2.69.142"}, {"DE", "91.198.174.192"}} {
		st.Record(audit.Event{Time: now.Add(-time.Duration(2-i) * time.Hour), Account: "Alice", Addr: netip.MustParseAddr(src.addr),
			Country: src.cc, Protocol: "imap", Listener: "imaps", Mech: "PLAIN", Result: audit.ResultPass})
	}
	// A pass of another account and a refusal of alice's from a third
	// country do not count.
	st.Record(audit.Event{Time: now, Account: "bob", Addr: netip.MustParseAddr("81.2.69.143"), Country: "US",
		Protocol: "imap", Listener: "imaps", Mech: "PLAIN", Result: audit.ResultPass})
	st.Record(audit.Event{Time: now, Account: "alice", Addr: netip.MustParseAddr("77.88.55.88"), Country: "RU",
		Protocol: "imap", Listener: "imaps", Mech: "PLAIN", Result: audit.ResultDenied})
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	// The restarted process.
	st, err = audit.Open(audit.Config{Path: path}, audit.Options{Node: "mx1", DefaultDomain: "example.com"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if ccs, err := st.LoginCountries(t.Context(), "ALICE", now.Add(-24*time.Hour)); err != nil || len(ccs) != 2 {
		t.Fatalf("history of alice: %v, %v; want GB and DE", ccs, err)
	}
	cfg := guard.Defaults()
	cfg.Compromise.Countries, cfg.Compromise.Window = 2, 24*time.Hour
	with, err := guard.New(cfg, guard.Options{History: st.LoginCountries})
	if err != nil {
		t.Fatal(err)
	}
	without, err := guard.New(cfg, guard.Options{})
	if err != nil {
		t.Fatal(err)
	}
	from := netip.MustParseAddr("90.84.1.2")
	for _, tc := range []struct {
		name string
		g    *guard.Guard
		want bool
	}{{"with the history", with, true}, {"memory only", without, false}} {
		a := tc.g.Attempt("alice@example.com", from, "pw")
		if v := a.Begin(t.Context()); !v.Allow {
			t.Fatalf("%s: %+v", tc.name, v)
		}
		got := false
		for _, e := range a.Finish(guard.Passed, "FR") {
			got = got || e.Kind == guard.EventCompromised
		}
		if got != tc.want {
			t.Errorf("%s: COMPROMISED raised %v, want %v", tc.name, got, tc.want)
		}
	}
}
