package audit

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

// TestActions: console actions are stored, read back newest first and
// paged, survive reopening the file, and are purged with the retention.
func TestActions(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.db")
	now := time.Now().UTC().Truncate(time.Millisecond)
	ctx := context.Background()
	s := open(t, Config{Path: path}, Options{})
	for i, a := range []Action{
		{Time: now.Add(-time.Hour), User: "root", Remote: "127.0.0.1", What: "ban added: old"},
		{Time: now.Add(-time.Minute), User: "root", Remote: "127.0.0.1", What: "ban added: 192.0.2.0/24 for 1h (Grüße)"},
		{Time: now, User: "ops", Remote: "::1", What: "ban lifted: 192.0.2.0/24"},
	} {
		if err := s.AddAction(ctx, a); err != nil {
			t.Fatalf("action %d: %v", i, err)
		}
	}
	got, err := s.Actions(ctx, 2, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].What != "ban lifted: 192.0.2.0/24" || got[0].User != "ops" || got[0].Remote != "::1" || !got[0].Time.Equal(now) ||
		got[1].What != "ban added: 192.0.2.0/24 for 1h (Grüße)" {
		t.Fatalf("newest two: %+v", got)
	}
	if page, _ := s.Actions(ctx, 2, 2); len(page) != 1 || page[0].What != "ban added: old" {
		t.Errorf("second page: %+v", page)
	}
	s.Close()

	// A reopened store has them.
	s2 := open(t, Config{Path: path}, Options{})
	got, err = s2.Actions(ctx, 0, 0)
	if err != nil || len(got) != 3 {
		t.Fatalf("after reopening: %d actions, %v; want 3", len(got), err)
	}
	s2.Close()

	// 30 minutes short of 90 days later the retention purge has dropped the
	// action of an hour ago and kept the other two.
	later := func() time.Time { return now.Add(90*24*time.Hour - 30*time.Minute) }
	s3 := open(t, Config{Path: path, Retention: 90 * 24 * time.Hour}, Options{now: later})
	if _, err := s3.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	got, _ = s3.Actions(ctx, 0, 0)
	if len(got) != 2 || got[1].What != "ban added: 192.0.2.0/24 for 1h (Grüße)" {
		t.Errorf("after the purge: %+v", got)
	}
}
