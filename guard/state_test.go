package guard

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// restart builds a second Guard on the same config and clock, as after
// a restart, and loads path into it.
func restart(t *testing.T, clk *fakeClock, mod func(*Config), path string) *Guard {
	t.Helper()
	c := Defaults()
	if mod != nil {
		mod(&c)
	}
	g, err := New(c, Options{Now: clk.Now, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Load(path); err != nil {
		t.Fatalf("Load: %v", err)
	}
	return g
}

func TestPersistenceRoundTrip(t *testing.T) {
	g, clk := newTestGuard(t, nil)
	path := filepath.Join(t.TempDir(), "guard.json")
	const alice = "alice@example.org"
	home := netip.MustParseAddr("198.51.100.20")
	g.success(alice, home, "DE")
	failMany(g, addr1, 10, "b") // auto ban of 192.0.2.1, offence 1
	if _, err := g.AddBan(netip.MustParsePrefix("2001:db8::/32"), 48*time.Hour, "admin test"); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		g.failure(alice, netip.AddrFrom4([4]byte{10, byte(i), 0, 1}), fmt.Sprint("guess", i))
	}
	if err := g.Save(path); err != nil {
		t.Fatalf("Save: %v", err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v, mode %v; want 0600", err, fi.Mode())
	}
	data, _ := os.ReadFile(path)
	if strings.Contains(string(data), "guess") || strings.Contains(string(data), "pw-") {
		t.Fatalf("state file holds a password: %s", data)
	}

	g2 := restart(t, clk, nil, path)
	if got, want := g2.Bans(), g.Bans(); !reflect.DeepEqual(got, want) {
		t.Fatalf("bans after restart = %+v, want %+v", got, want)
	}
	if got, want := g2.Lockouts(), g.Lockouts(); !reflect.DeepEqual(got, want) || len(got) != 1 {
		t.Fatalf("lockouts after restart = %+v, want %+v", got, want)
	}
	if v := g2.checkNow(alice, netip.MustParseAddr("10.200.0.1")); v.Allow {
		t.Fatalf("locked login allowed after restart: %+v", v)
	}
	if v := g2.checkNow(alice, home); !v.Allow {
		t.Fatalf("owner's network forgotten after restart: %+v", v)
	}
	if _, err := g2.Accept(addr1); !errors.Is(err, ErrBanned) {
		t.Fatalf("Accept(banned) after restart = %v, want ErrBanned", err)
	}
	// The exemption of home survived: its failures ban nothing.
	if ev := failMany(g2, home, 12, "h"); len(ev) != 0 {
		t.Fatalf("exempt address after restart raised %v", kinds(ev))
	}
	// Escalation survived: the next ban of 192.0.2.1 is offence 2.
	clk.Advance(16 * time.Minute)
	ev := failMany(g2, addr1, 10, "again")
	if e, ok := findEvent(ev, EventBanned, "192.0.2.1/32"); !ok || e.Offence != 2 || e.Duration != time.Hour {
		t.Fatalf("ban after restart = %+v, want offence 2 for 1h", e)
	}
}

func TestLoadDropsExpired(t *testing.T) {
	g, clk := newTestGuard(t, nil)
	path := filepath.Join(t.TempDir(), "guard.json")
	failMany(g, addr1, 10, "b") // 15 minutes
	if _, err := g.AddBan(netip.MustParsePrefix("198.51.100.0/24"), 3*time.Hour, "long"); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		g.failure("alice@example.org", netip.AddrFrom4([4]byte{10, byte(i), 0, 1}), fmt.Sprint("g", i)) // 1 hour
	}
	if err := g.Save(path); err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * time.Hour) // down while the short ones ended
	g2 := restart(t, clk, nil, path)
	if b := g2.Bans(); len(b) != 1 || b[0].Prefix.String() != "198.51.100.0/24" || !b[0].Manual {
		t.Fatalf("bans after a 2h downtime = %+v, want only the 3h admin ban", b)
	}
	if l := g2.Lockouts(); len(l) != 0 {
		t.Fatalf("lockouts after a 2h downtime = %+v, want none", l)
	}
	// A ban of a network trusted since is dropped too.
	g3 := restart(t, clk, func(c *Config) { c.TrustedNetworks = []string{"198.51.100.128/25"} }, path)
	if b := g3.Bans(); len(b) != 0 {
		t.Fatalf("bans overlapping trusted networks after load = %+v", b)
	}
}

func TestLoadMissingAndCorrupt(t *testing.T) {
	g, _ := newTestGuard(t, nil)
	dir := t.TempDir()
	if err := g.Load(filepath.Join(dir, "absent.json")); err != nil {
		t.Fatalf("Load(missing) = %v, want nil (first start)", err)
	}
	if _, err := g.AddBan(netip.MustParsePrefix("192.0.2.0/24"), time.Hour, "keep"); err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{
		"garbage":     "\x00\x01not json",
		"truncated":   `{"version":1,"bans":[{"prefix":"10.0.0.0/8","until":"2030-01-01T00:00:00Z"`,
		"version":     `{"version":2}`,
		"unknown":     `{"version":1,"extra":true}`,
		"unmasked":    `{"version":1,"bans":[{"prefix":"10.1.2.3/8","until":"2030-01-01T00:00:00Z"}]}`,
		"badprefix":   `{"version":1,"bans":[{"prefix":"10.0.0.0/33","until":"2030-01-01T00:00:00Z"}]}`,
		"trailing":    `{"version":1} {}`,
		"upper login": `{"version":1,"lockouts":[{"login":"Alice","until":"2030-01-01T00:00:00Z"}]}`,
		"no end":      `{"version":1,"lockouts":[{"login":"alice"}]}`,
		"offence":     `{"version":1,"offences":[{"prefix":"10.0.0.0/8","count":0}]}`,
		"known":       `{"version":1,"known_networks":[{"login":"","prefix":"10.0.0.0/8"}]}`,
	} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		err := g.Load(path)
		if !errors.Is(err, ErrBadState) || !strings.Contains(err.Error(), path) {
			t.Errorf("Load(%s) = %v, want ErrBadState naming the file", name, err)
		}
	}
	if b := g.Bans(); len(b) != 1 {
		t.Fatalf("a failed Load changed the bans: %+v", b)
	}
}

func TestSaveFailsCleanly(t *testing.T) {
	g, _ := newTestGuard(t, nil)
	dir := t.TempDir()
	if err := g.Save(filepath.Join(dir, "no-such-dir", "guard.json")); err == nil {
		t.Fatal("Save into a missing directory succeeded")
	}
	// The target is a directory: the rename fails; no temp file remains.
	target := filepath.Join(dir, "target")
	if err := os.Mkdir(target, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(target, "x"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := g.Save(target); err == nil {
		t.Fatal("Save over a non-empty directory succeeded")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("directory after a failed Save holds %v, want only target", entries)
	}
}

// FuzzLoadState feeds arbitrary state files to Load: it must not panic,
// must not change anything on error, and what it accepts must survive a
// Save/Load round trip unchanged.
func FuzzLoadState(f *testing.F) {
	f.Add([]byte(`{"version":1}`))
	f.Add([]byte(`{"version":1,"bans":[{"prefix":"192.0.2.0/24","created":"2026-11-26T12:00:00Z","until":"2026-11-27T12:00:00Z","reason":"x","manual":true}]}`))
	f.Add([]byte(`{"version":1,"lockouts":[{"login":"alice","until":"2026-11-27T12:00:00Z","reason":"r"},{"login":"bob","compromised":true}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		g, clk := newTestGuard(t, nil)
		if err := g.loadState(data); err != nil {
			if len(g.Bans())+len(g.Lockouts()) != 0 {
				t.Fatalf("failed load (%v) changed state", err)
			}
			return
		}
		bans, locks := g.Bans(), g.Lockouts()
		path := filepath.Join(t.TempDir(), "s.json")
		if err := g.Save(path); err != nil {
			t.Fatalf("Save after a good load: %v", err)
		}
		g2 := restart(t, clk, nil, path)
		if got := g2.Bans(); !reflect.DeepEqual(got, bans) {
			t.Fatalf("bans changed in a round trip:\n got %+v\nwant %+v", got, bans)
		}
		if got := g2.Lockouts(); !reflect.DeepEqual(got, locks) {
			t.Fatalf("lockouts changed in a round trip:\n got %+v\nwant %+v", got, locks)
		}
		for _, b := range bans {
			if !b.Manual {
				continue // may be lifted by a loaded exemption
			}
			if _, err := g.Accept(b.Prefix.Addr()); !errors.Is(err, ErrBanned) {
				t.Fatalf("loaded ban %v not enforced: %v", b.Prefix, err)
			}
		}
	})
}
