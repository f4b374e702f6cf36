package audit

import (
	"testing"
	"time"
)

// FuzzParseSince: any --since value is refused or gives a span between
// zero and the ten-year bound, never a panic or an overflow.
func FuzzParseSince(f *testing.F) {
	for _, s := range []string{"7d", "24h", "2w", "90m", "0d", "-1h", "d", "99999999999999999999d", "1h30m"} {
		f.Add(s)
	}
	now := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		since, err := ParseSince(s, now)
		if err != nil {
			return
		}
		if d := now.Sub(since); d < 0 || d > maxSpan {
			t.Fatalf("ParseSince(%q) = %v before now", s, d)
		}
	})
}
