package audit

import (
	"context"
	"database/sql"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// open opens a store on a fresh database file in the test's directory.
func open(t testing.TB, cfg Config, o Options) *Store {
	t.Helper()
	if cfg.Path == "" {
		cfg.Path = filepath.Join(t.TempDir(), "audit.db")
	}
	s, err := Open(cfg, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func ev(account, addr, result string, at time.Time) Event {
	return Event{Time: at, Account: account, Addr: netip.MustParseAddr(addr), Country: "GB",
		Protocol: "imap", Listener: "imaps", Mech: "PLAIN", Result: result}
}

func stats(t testing.TB, s *Store) Stats {
	t.Helper()
	st, err := s.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// Many sessions record at once: every decision is counted exactly once
// (written or dropped), in one row per aggregation key.
func TestConcurrentWriters(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := open(t, Config{BatchRows: 100, BatchInterval: 5 * time.Millisecond}, Options{Registerer: reg})
	const writers, each = 16, 500
	now := time.Now()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				e := ev(fmt.Sprintf("user%d", w), fmt.Sprintf("192.0.2.%d", w), ResultPass, now)
				e.ClientID = fmt.Sprintf("client %d", i%2)
				s.Record(e)
			}
		})
	}
	wg.Wait()
	s.Flush()
	st := stats(t, s)
	dropped := int64(testutil.ToFloat64(s.m.dropped))
	if st.Events+dropped != writers*each {
		t.Errorf("events %d + dropped %d, want %d", st.Events, dropped, writers*each)
	}
	if dropped == 0 && st.Rows != writers*2 {
		t.Errorf("rows %d, want %d (one per writer and client ID)", st.Rows, writers*2)
	}
	if w := int64(testutil.ToFloat64(s.m.written)); w != st.Events {
		t.Errorf("written metric %d, events in the database %d", w, st.Events)
	}
}

// Rows aggregate per (account, day, address, protocol, client ID,
// mechanism, result); the account is normalized as the policy does it.
func TestAggregatesAndNormalizes(t *testing.T) {
	s := open(t, Config{}, Options{DefaultDomain: "Example.COM"})
	day1 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	for i := range 5 {
		s.Record(ev("Alice", "192.0.2.1", ResultPass, day1.Add(time.Duration(i)*time.Minute)))
	}
	s.Record(ev("alice@example.com", "192.0.2.1", ResultPass, day1.Add(24*time.Hour)))
	s.Record(ev("ALICE", "192.0.2.1", ResultFailed, day1))
	s.Flush()
	rows, err := s.History(context.Background(), Query{Account: "alice@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 3 {
		t.Fatalf("%d rows, want 3: %+v", len(rows), rows)
	}
	if r := rows[0]; r.Count != 1 || !r.LastSeen.Equal(day1.Add(24*time.Hour)) {
		t.Errorf("newest row %+v, want the next day's pass", r)
	}
	var five bool
	for _, r := range rows {
		if r.Result == ResultPass && r.Count == 5 {
			five = r.FirstSeen.Equal(day1) && r.LastSeen.Equal(day1.Add(4*time.Minute))
		}
	}
	if !five {
		t.Errorf("no row counting the first day's 5 passes from first to last seen: %+v", rows)
	}
}

// The caps: an account's refused rows per day, and unknown accounts per
// day, fold into "(other)" rows; no decision is lost from the counts.
func TestCaps(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := open(t, Config{MaxFailedRows: 3, MaxUnknownAccounts: 2, MaxUnknownRows: 2}, Options{Registerer: reg})
	ctx := context.Background()
	now := time.Now()
	s.Record(ev("alice", "192.0.2.1", ResultPass, now))
	s.Flush() // alice is known from here on
	for i := range 10 {
		s.Record(ev("alice", fmt.Sprintf("198.51.100.%d", i), ResultFailed, now))
	}
	for u := range 5 {
		for i := range 4 {
			s.Record(ev(fmt.Sprintf("u%d", u), fmt.Sprintf("203.0.113.%d", i), ResultFailed, now))
		}
	}
	s.Flush()
	count := func(account string, failedOnly bool) (rows, events int64) {
		rs, err := s.History(ctx, Query{Account: account, Failed: failedOnly})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			rows++
			events += r.Count
		}
		return rows, events
	}
	if rows, events := count("alice", true); rows != 4 || events != 10 {
		t.Errorf("alice: %d refused rows counting %d, want 3 + one (other) row counting 10", rows, events)
	}
	for _, u := range []string{"u0", "u1"} {
		if rows, events := count(u, false); rows != 3 || events != 4 {
			t.Errorf("%s (admitted unknown): %d rows counting %d, want 2 + one (other) row counting 4", u, rows, events)
		}
	}
	if rows, events := count("u2", false); rows != 0 || events != 0 {
		t.Errorf("u2 beyond the unknown-account cap has %d rows", rows)
	}
	if rows, events := count(Other, false); rows != 4 || events != 12 {
		t.Errorf("(other): %d rows counting %d, want 3 + one (other) row counting 12", rows, events)
	}
	st := stats(t, s)
	if st.Events != 1+10+20 {
		t.Errorf("%d events in the database, want 31", st.Events)
	}
	if f := testutil.ToFloat64(s.m.folded.WithLabelValues("unknown_accounts")); f == 0 {
		t.Error("folded{cap=unknown_accounts} not counted")
	}
	// A pass is never capped, and makes its account known.
	s.Record(ev("u4", "203.0.113.9", ResultPass, now))
	s.Flush()
	if rows, _ := count("u4", false); rows != 1 {
		t.Errorf("u4's pass: %d rows, want 1", rows)
	}
}

// Retention: rows of days older than the period go, with the unknown
// bookkeeping and known accounts whose last pass is that old.
func TestRetention(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.db")
	now := time.Now()
	s := open(t, Config{Path: path}, Options{})
	s.Record(ev("old", "192.0.2.1", ResultPass, now.Add(-100*24*time.Hour)))
	s.Record(ev("old", "192.0.2.1", ResultFailed, now.Add(-95*24*time.Hour)))
	s.Record(ev("new", "192.0.2.2", ResultPass, now.Add(-10*24*time.Hour)))
	s.Record(ev("stranger", "192.0.2.3", ResultFailed, now.Add(-91*24*time.Hour)))
	s.Flush()
	if st := stats(t, s); st.Rows != 4 {
		t.Fatalf("%d rows before the purge, want 4", st.Rows)
	}
	n, err := s.Purge(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Errorf("purged %d rows, want 3", n)
	}
	if st := stats(t, s); st.Rows != 1 {
		t.Errorf("%d rows after the purge, want 1", st.Rows)
	}
	if s.isKnown("old") || !s.isKnown("new") {
		t.Errorf("known after the purge: old %v (want false), new %v (want true)", s.isKnown("old"), s.isKnown("new"))
	}
	var unknown int
	s.db.QueryRow(`SELECT count(*) FROM unknown`).Scan(&unknown)
	if unknown != 0 {
		t.Errorf("%d unknown-account entries left, want 0", unknown)
	}
	s.Close()
	// The known set survives a restart.
	s2 := open(t, Config{Path: path}, Options{})
	if !s2.isKnown("new") {
		t.Error("a reopened store forgot the known account")
	}
}

// network_only keeps the /24 or /48, never the address.
func TestNetworkOnly(t *testing.T) {
	s := open(t, Config{NetworkOnly: true}, Options{})
	now := time.Now()
	s.Record(ev("a", "203.0.113.77", ResultPass, now))
	s.Record(ev("a", "2001:db8:1:2::5", ResultPass, now))
	s.Flush()
	rows, err := s.History(context.Background(), Query{Account: "a"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range rows {
		got = append(got, r.Addr)
	}
	slices.Sort(got)
	if want := []string{"2001:db8:1::/48", "203.0.113.0/24"}; !slices.Equal(got, want) {
		t.Errorf("stored addresses %q, want %q", got, want)
	}
	var full int
	s.db.QueryRow(`SELECT count(*) FROM logins WHERE addr LIKE '%.77' OR addr LIKE '%::5'`).Scan(&full)
	if full != 0 {
		t.Error("a full address was stored with network_only")
	}
}

// The compromise signal's query: distinct countries of passed logins
// since a time, from the database, so a restart does not reset it.
func TestCountries(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.db")
	now := time.Now()
	s := open(t, Config{Path: path}, Options{})
	for _, x := range []struct {
		cc, result string
		ago        time.Duration
	}{
		{"DE", ResultPass, 72 * time.Hour}, // before since
		{"GB", ResultPass, 3 * time.Hour},
		{"US", ResultPass, 2 * time.Hour},
		{"GB", ResultPass, time.Hour},
		{"RU", ResultDenied, time.Hour}, // not a pass
		{"CN", ResultFailed, time.Hour}, // not a pass
	} {
		e := ev("alice", "192.0.2.1", x.result, now.Add(-x.ago))
		e.Country = x.cc
		e.Mech = x.cc // separate rows
		s.Record(e)
	}
	s.Close()
	r, err := OpenReader(path) // as after a restart
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got, err := r.Countries(context.Background(), "alice", now.Add(-24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"GB", "US"}; !slices.Equal(got, want) {
		t.Errorf("countries %q, want %q", got, want)
	}
}

// A reader opened while the writer runs sees committed rows and does not
// block the writer.
func TestReaderWhileWriting(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.db")
	s := open(t, Config{Path: path, BatchInterval: time.Millisecond}, Options{})
	s.Record(ev("alice", "192.0.2.1", ResultPass, time.Now()))
	s.Flush()
	r, err := OpenReader(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 2000 {
			s.Record(ev("bob", fmt.Sprintf("192.0.2.%d", i%200), ResultPass, time.Now()))
		}
		s.Flush()
	}()
	for range 20 {
		if rows, err := r.History(context.Background(), Query{Account: "alice"}); err != nil || len(rows) != 1 {
			t.Fatalf("reader: %d rows, %v", len(rows), err)
		}
	}
	<-done
}

func TestNormalizeAndClean(t *testing.T) {
	for _, c := range []struct{ in, dom, want string }{
		{"Alice", "", "alice"},
		{"Alice", "Example.ORG", "alice@example.org"},
		{"Bob@X.org", "example.org", "bob@x.org"},
		{"\u212aelvin", "", "\u212aelvin"}, // only ASCII folds
	} {
		if got := Normalize(c.in, c.dom); got != c.want {
			t.Errorf("Normalize(%q, %q) = %q, want %q", c.in, c.dom, got, c.want)
		}
	}
	if got := clean("a\x1b[2Jb\u00e9", 64); got != "a?[2Jb??" {
		t.Errorf("clean = %q", got)
	}
	if got := clean("abcdef", 3); got != "abc" {
		t.Errorf("clean bound = %q", got)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (Config{Retention: time.Hour, Queue: -1}).Validate(); err == nil {
		t.Error("a 1h retention and a negative queue validated")
	}
	if err := (Config{}).WithDefaults().Validate(); err != nil {
		t.Error(err)
	}
}

// While the database is locked (a stalled disk, a long backup), Record
// still returns at once: the queue fills, further decisions are dropped
// and counted, and once the lock goes the writer catches up with what
// was queued.
func TestRecordNeverBlocks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.db")
	reg := prometheus.NewRegistry()
	s := open(t, Config{Path: path, Queue: 10, BatchRows: 1, BatchInterval: time.Millisecond}, Options{Registerer: reg})
	other, err := sql.Open("sqlite", dsn(path, false))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	conn, err := other.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(context.Background(), `BEGIN IMMEDIATE`); err != nil {
		t.Fatal(err)
	}
	const total = 1000
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range total {
			s.Record(ev("alice", fmt.Sprintf("192.0.2.%d", i%250), ResultPass, time.Now()))
		}
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Record blocked while the database was locked")
	}
	dropped := int64(testutil.ToFloat64(s.m.dropped))
	if dropped < total-12 { // the queue, and the one event the writer holds
		t.Errorf("%d dropped while locked, want at least %d", dropped, total-12)
	}
	if _, err := conn.ExecContext(context.Background(), `COMMIT`); err != nil {
		t.Fatal(err)
	}
	s.Flush()
	st := stats(t, s)
	lost := int64(testutil.ToFloat64(s.m.writeErrors))
	if st.Events+dropped+lost != total { // a batch is one decision here
		t.Errorf("written %d + dropped %d + lost %d, want %d", st.Events, dropped, lost, total)
	}
}
