package fleet

import (
	"testing"

	"github.com/redis/go-redis/v9"
)

func TestTrimmedPast(t *testing.T) {
	for _, c := range []struct {
		name string
		inf  redis.XInfoStream
		from string
		want bool
	}{
		{"caught up", redis.XInfoStream{Length: 3, FirstEntry: redis.XMessage{ID: "100-0"}, LastGeneratedID: "102-0"}, "102-0", false},
		{"behind, nothing trimmed", redis.XInfoStream{Length: 3, FirstEntry: redis.XMessage{ID: "100-0"}, LastGeneratedID: "102-0"}, "100-0", false},
		{"trimmed past the last seen", redis.XInfoStream{Length: 2, FirstEntry: redis.XMessage{ID: "101-1"}, LastGeneratedID: "102-0"}, "101-0", true},
		{"trimmed empty after growing", redis.XInfoStream{Length: 0, LastGeneratedID: "105-0"}, "102-0", true},
		{"empty, nothing new", redis.XInfoStream{Length: 0, LastGeneratedID: "105-0"}, "105-0", false},
		{"same millisecond, later sequence", redis.XInfoStream{Length: 1, FirstEntry: redis.XMessage{ID: "105-2"}, LastGeneratedID: "105-2"}, "105-1", true},
	} {
		if got := trimmedPast(&c.inf, c.from); got != c.want {
			t.Errorf("%s: trimmedPast = %v, want %v", c.name, got, c.want)
		}
	}
}
