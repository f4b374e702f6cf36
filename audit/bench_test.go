package audit

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkRecord is what a login pays: one queue send (docs/BENCHMARKS.md,
// "Audit database"). The queue is large enough that nothing is dropped
// while the writer keeps up.
func BenchmarkRecord(b *testing.B) {
	s := open(b, Config{Queue: 1 << 20}, Options{})
	e := ev("alice", "192.0.2.1", ResultFailed, time.Now())
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			s.Record(e)
		}
	})
	b.StopTimer()
	s.Flush()
}

// BenchmarkWriteBatch writes one full batch (500 decisions, each a new
// row of a known account) per op: the writer's rate.
func BenchmarkWriteBatch(b *testing.B) {
	s := open(b, Config{}, Options{})
	now := time.Now()
	evs := make([]Event, 500)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		for j := range evs {
			evs[j] = ev(fmt.Sprintf("user%d", j), fmt.Sprintf("10.%d.%d.%d", i%250, j/250, j%250), ResultPass, now)
		}
		s.writeBatch(evs)
	}
	b.ReportMetric(float64(b.N*len(evs))/b.Elapsed().Seconds(), "decisions/s")
}

// fill inserts n rows straight into the database: 1000 accounts, the
// newest days first, each row its own source.
func fill(tb testing.TB, s *Store, n int) {
	tb.Helper()
	now := time.Now().Unix()
	_, err := s.db.Exec(`WITH RECURSIVE c(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM c WHERE x < ?)
		INSERT INTO logins (account, day, addr, proto, client_id, mech, result, network, country, asn, org,
			listener, tls, cipher, sni, cause, node, first_seen, last_seen, count)
		SELECT 'user' || (x % 1000), (? - (x / 1000) % 90 * 86400) / 86400, '10.' || (x % 250) || '.' || (x / 250 % 250) || '.1',
			'imap', 'Thunderbird 128', 'PLAIN', CASE WHEN x % 3 = 0 THEN 'pass' ELSE 'failed' END,
			'10.0.0.0/24', 'GB', '', '', 'imaps', 'TLS 1.3', 'TLS_AES_128_GCM_SHA256', 'mail.example.com', '', 'node1',
			? - (x / 1000) % 90 * 86400, ? - (x / 1000) % 90 * 86400, 1 + x % 7
		FROM c`, n-1, now, now, now)
	if err != nil {
		tb.Fatal(err)
	}
}

// BenchmarkHistory1M is `mailgate audit USER --since 90d` on a database of
// a million rows (one account's 1000 rows among them): the issue asks
// for under 50 ms.
func BenchmarkHistory1M(b *testing.B) {
	path := filepath.Join(b.TempDir(), "audit.db")
	s := open(b, Config{Path: path}, Options{})
	fill(b, s, 1_000_000)
	s.Close()
	r, err := OpenReader(path)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	since := time.Now().Add(-90 * 24 * time.Hour)
	ctx := context.Background()
	for b.Loop() {
		rows, err := r.History(ctx, Query{Account: "user42", Since: since})
		if err != nil || len(rows) != 1000 {
			b.Fatalf("%d rows, %v", len(rows), err)
		}
	}
	if fi, err := os.Stat(path); err == nil {
		b.ReportMetric(float64(fi.Size())/1e6, "db-MB")
	}
}

// TestFill checks the benchmark's fixture on a small scale.
func TestFill(t *testing.T) {
	s := open(t, Config{}, Options{})
	fill(t, s, 5000)
	rows, err := s.History(context.Background(), Query{Account: "user42", Since: time.Now().Add(-90 * 24 * time.Hour)})
	if err != nil || len(rows) != 5 {
		t.Fatalf("%d rows, %v", len(rows), err)
	}
	if _, err := netip.ParseAddr(rows[0].Addr); err != nil {
		t.Error(err)
	}
}
