package policy

import (
	"context"
	"github.com/mailgate/mailgate/internal/errlist"
	"github.com/mailgate/mailgate/internal/testwait"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestReloadUnderConcurrentDecisions swaps policies while goroutines
// decide; every decision must come from one whole policy (old or new),
// never a mix. Run with -race.
func TestReloadUnderConcurrentDecisions(t *testing.T) {
	dir := t.TempDir()
	uf := filepath.Join(dir, "user-allowed.php")
	rf := filepath.Join(dir, "rules.yaml")
	// Version A allows alice from RU and denies bob GB; B the reverse.
	verA := [2]string{"alice|RU\n", "rules:\n  - users: bob\n    deny: GB\n"}
	verB := [2]string{"bob|GB\n", "rules:\n  - users: alice\n    deny: RU\n"}
	write := func(v [2]string) {
		writeFile(t, uf, v[0])
		writeFile(t, rf, v[1])
	}
	write(verA)
	log, _ := testLogger(t)
	e, err := New(Config{UserFile: uf, RulesFile: rf, AllowCountries: []string{"GB", "RU"}}, testGeo, log)
	if err != nil {
		t.Fatal(err)
	}
	alice := Request{Login: "alice", Protocol: IMAP, Addr: ip("192.0.2.30")}
	bob := Request{Login: "bob", Protocol: IMAP, Addr: ip("81.2.69.142")}
	var stop atomic.Bool
	var wg sync.WaitGroup
	var decisions atomic.Int64
	for range 4 {
		wg.Go(func() {
			for !stop.Load() {
				a, b := e.Decide(alice), e.Decide(bob)
				// Each decision must be one of the answers of A or of B.
				// A snapshot mixing A's user file with B's rules (or the
				// reverse) would let alice or bob in by allow_countries.
				if a.Allow && !strings.HasSuffix(a.Rule, "user-allowed.php:1") {
					t.Errorf("alice allowed by %s", a.Rule)
				}
				if !a.Allow && !strings.HasSuffix(a.Rule, "rules.yaml:2") {
					t.Errorf("alice denied by %s", a.Rule)
				}
				if b.Allow && !strings.HasSuffix(b.Rule, "user-allowed.php:1") {
					t.Errorf("bob allowed by %s", b.Rule)
				}
				decisions.Add(2)
			}
		})
	}
	for i := range 60 {
		if i%2 == 0 {
			write(verB)
		} else {
			write(verA)
		}
		if err := e.Reload(); err != nil {
			t.Fatalf("Reload: %v", err)
		}
	}
	stop.Store(true)
	wg.Wait()
	if decisions.Load() == 0 {
		t.Fatal("no decisions were made")
	}
	// Last write was A.
	if d := e.Decide(alice); !d.Allow {
		t.Errorf("after reloads alice = %+v, want allowed by version A", d)
	}
}

func TestReloadKeepsOldPolicyOnError(t *testing.T) {
	e, _ := setup(t, Config{}, "alice|RU\n", "rules:\n  - users: bob\n    allow: GB\n")
	writeFile(t, e.cfg.RulesFile, "rules:\n  - users: bob\n    allow: [GB, NOT-A-PLACE!]\n  - user: carol\n    frobnicate: 1\n")
	err := e.Reload()
	if err == nil {
		t.Fatal("Reload accepted an invalid file")
	}
	if n := len(errlist.Split(err)); n < 2 {
		t.Errorf("Reload reported %d errors, want every one:\n%v", n, err)
	}
	for _, want := range []string{"rules.yaml:3:", "rules.yaml:5:"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Reload error lacks %s:\n%v", want, err)
		}
	}
	if d := e.Decide(Request{Login: "bob", Protocol: IMAP, Addr: ip("81.2.69.142")}); !d.Allow {
		t.Errorf("old policy lost after failed reload: %+v", d)
	}
	os.Remove(e.cfg.UserFile)
	if err := e.Reload(); err == nil {
		t.Error("Reload accepted a missing user file")
	}
	if d := e.Decide(Request{Login: "alice", Protocol: IMAP, Addr: ip("192.0.2.30")}); !d.Allow {
		t.Errorf("old policy lost after failed reload: %+v", d)
	}
}

// TestWatchPicksUpChanges: a file rewritten (by rename, as mailgate allow
// does) is reloaded; a broken one is logged with file:line and ignored.
func TestWatchPicksUpChanges(t *testing.T) {
	e, lb := setup(t, Config{WatchInterval: 10 * time.Millisecond}, "alice|RU\n", "")
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { e.Watch(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	bob := Request{Login: "bob", Protocol: IMAP, Addr: ip("81.2.69.142")}
	tmp := e.cfg.UserFile + ".new"
	writeFile(t, tmp, "alice|RU\nbob|GB\n")
	if err := os.Rename(tmp, e.cfg.UserFile); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "bob allowed after file change", func() bool { return e.Decide(bob).Allow })

	if !strings.Contains(lb.String(), "reloaded") {
		t.Error("no log line for the reload")
	}

	// Now with a rules file that breaks: the old policy stays, error logged.
	e2, lb2 := setup(t, Config{WatchInterval: 10 * time.Millisecond}, "", "rules:\n  - users: bob\n    deny: GB\n")
	ctx2, cancel2 := context.WithCancel(t.Context())
	done2 := make(chan struct{})
	go func() { e2.Watch(ctx2); close(done2) }()
	defer func() { cancel2(); <-done2 }()
	writeFile(t, e2.cfg.RulesFile, "rules:\n  - users: bob\n    deny: [GB, NOT!]\n")
	testwait.For(t, "reload error logged", func() bool { return strings.Contains(lb2.String(), "rules.yaml:3") })
	if d := e2.Decide(bob); d.Allow || !strings.HasSuffix(d.Rule, "rules.yaml:2") {
		t.Errorf("after broken rewrite bob = %+v, want the old deny", d)
	}
}

func context2(t *testing.T) (context.Context, context.CancelFunc) {
	return context.WithCancel(t.Context())
}
