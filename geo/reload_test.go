package geo

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailgate/mailgate/internal/testwait"
)

// countryBIN is a small BIN placing 8.8.8.0/24 and 2001:4860::/32 in code;
// pad adds rows so versions differ in size (Watch compares size and mtime).
func countryBIN(code string, pad int) []byte {
	a := netip.MustParseAddr
	v4 := []binRow{{from: a("8.8.8.0"), code: code, name: CountryName(code)}, {from: a("8.8.9.0"), code: "-", name: "-"}}
	for i := range pad {
		v4 = append(v4, binRow{from: netip.AddrFrom4([4]byte{9, 0, byte(i), 0}), code: "-", name: "-"})
	}
	return writeBIN(binSpec{
		v4: v4,
		v6: []binRow{{from: a("2001:4860::"), code: code, name: CountryName(code)}, {from: a("2001:4861::"), code: "-", name: "-"}},
	})
}

// replaceFile writes b to path the way updaters do: a new file renamed
// into place.
func replaceFile(t testing.TB, path string, b []byte) {
	t.Helper()
	tmp := path + ".tmp"
	writeFile(t, tmp, b)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestReloadUnderLoad: reloads (good and broken files) while many
// goroutines look up; no lookup may fail or see anything but one of the
// good versions, and a broken file keeps the old data.
func TestReloadUnderLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db.BIN")
	writeFile(t, path, countryBIN("US", 0))
	d := mustOpen(t, Config{Databases: []string{path}})
	var stop atomic.Bool
	var bad atomic.Int64
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := netip.MustParseAddr("8.8.8.8")
			if g%2 == 1 {
				a = netip.MustParseAddr("2001:4860::1")
			}
			for !stop.Load() {
				if c := d.Lookup(a).Country; c != "US" && c != "CH" {
					bad.Add(1)
				}
			}
		}()
	}
	broken := [][]byte{nil, countryBIN("CH", 0)[:100], []byte("garbage garbage garbage garbage")}
	want := "US"
	for i := range 30 {
		switch i % 3 {
		case 0, 1:
			want = map[string]string{"US": "CH", "CH": "US"}[want]
			replaceFile(t, path, countryBIN(want, 0))
			if err := d.Reload(); err != nil {
				t.Fatalf("Reload of a good file: %v", err)
			}
		case 2:
			replaceFile(t, path, broken[(i/3)%len(broken)])
			err := d.Reload()
			if err == nil || !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrEmpty) && !errors.Is(err, ErrFormat) {
				t.Fatalf("Reload of a broken file = %v, want a corrupt/empty/format error", err)
			}
		}
		if got := d.Lookup(netip.MustParseAddr("8.8.8.8")).Country; got != want {
			t.Fatalf("after reload %d: 8.8.8.8 = %q, want %q", i, got, want)
		}
	}
	stop.Store(true)
	wg.Wait()
	if n := bad.Load(); n > 0 {
		t.Errorf("%d lookups during reloads gave a wrong answer", n)
	}
}

// TestConcurrentOpenRealBIN opens the real BIN from several goroutines at
// once while others look up: ip2location-go's package state is only ever
// touched under binLibMu (run with -race).
func TestConcurrentOpenRealBIN(t *testing.T) {
	path := realBIN(t)
	d := mustOpen(t, Config{Databases: []string{path}})
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			errs <- d.Reload()
		}()
		go func() {
			defer wg.Done()
			for range 10000 {
				if d.Lookup(netip.MustParseAddr("81.2.69.142")).Country != "GB" {
					errs <- errors.New("lookup failed during reload")
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

// TestReloadConfig swaps overrides and files together, and keeps the old
// configuration when the new one is invalid.
func TestReloadConfig(t *testing.T) {
	d := mustOpen(t, Config{Overrides: map[string]string{"127.0.0.2": "RU"}})
	if err := d.ReloadConfig(Config{Overrides: map[string]string{"127.0.0.2": "UK"}}); err == nil {
		t.Fatal("ReloadConfig accepted an invalid override")
	}
	if got := d.Lookup(netip.MustParseAddr("127.0.0.2")).Code(); got != "RU" {
		t.Errorf("after a failed ReloadConfig: %s, want RU", got)
	}
	if err := d.ReloadConfig(Config{Overrides: map[string]string{"127.0.0.2": "FR"}}); err != nil {
		t.Fatal(err)
	}
	if got := d.Lookup(netip.MustParseAddr("127.0.0.2")).Code(); got != "FR" {
		t.Errorf("after ReloadConfig: %s, want FR", got)
	}
}

// TestWatch: a changed file is picked up, a broken one is ignored (the old
// data stays), and a good one after it is picked up again.
func TestWatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db.BIN")
	writeFile(t, path, countryBIN("US", 0))
	d := mustOpen(t, Config{Databases: []string{path}, WatchInterval: 5 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Watch(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	lookup := func() string { return d.Lookup(netip.MustParseAddr("8.8.8.8")).Country }

	replaceFile(t, path, countryBIN("CH", 1))
	testwait.For(t, "the watcher to load CH", func() bool { return lookup() == "CH" })

	replaceFile(t, path, countryBIN("FR", 2)[:200])
	// The broken version is tried (and recorded as failed) on the next
	// poll; wait until the watcher has seen it, then check nothing changed.
	testwait.For(t, "the watcher to reject the broken file", func() bool {
		d.reloadMu.Lock()
		defer d.reloadMu.Unlock()
		return d.failed[path].size == 200
	})
	if got := lookup(); got != "CH" {
		t.Fatalf("after a broken update: %s, want CH still", got)
	}

	os.Remove(path)
	time.Sleep(20 * time.Millisecond)
	if got := lookup(); got != "CH" {
		t.Fatalf("after the file vanished: %s, want CH still", got)
	}

	replaceFile(t, path, countryBIN("FR", 3))
	testwait.For(t, "the watcher to load FR", func() bool { return lookup() == "FR" })
}

// TestWatchDisabled: a negative interval never reloads; Watch still ends
// with its context.
func TestWatchDisabled(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db.BIN")
	writeFile(t, path, countryBIN("US", 0))
	d := mustOpen(t, Config{Databases: []string{path}, WatchInterval: -1})
	replaceFile(t, path, countryBIN("CH", 1))
	d.poll()
	if got := d.Lookup(netip.MustParseAddr("8.8.8.8")).Country; got != "US" {
		t.Errorf("with polling disabled: %s, want US", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	d.Watch(ctx) // returns at once
}

func TestLastReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db.BIN")
	writeFile(t, path, countryBIN("US", 0))
	d := mustOpen(t, Config{Databases: []string{path}})
	if at, err := d.LastReload(); !at.IsZero() || err != nil {
		t.Errorf("before any reload: %v, %v", at, err)
	}
	replaceFile(t, path, []byte("broken"))
	if err := d.Reload(); err == nil {
		t.Fatal("Reload of a broken file succeeded")
	}
	if at, err := d.LastReload(); at.IsZero() || err == nil {
		t.Errorf("after a failed reload: %v, %v", at, err)
	}
	replaceFile(t, path, countryBIN("CH", 0))
	if err := d.Reload(); err != nil {
		t.Fatal(err)
	}
	if at, err := d.LastReload(); at.IsZero() || err != nil {
		t.Errorf("after a good reload: %v, %v", at, err)
	}
}
