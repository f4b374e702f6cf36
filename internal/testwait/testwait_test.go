package testwait

import (
	"sync/atomic"
	"testing"
)

// TestFor: For returns once the condition holds, after polling it again
// while it does not.
func TestFor(t *testing.T) {
	var n atomic.Int32
	For(t, "the third look", func() bool { return n.Add(1) >= 3 })
	if got := n.Load(); got != 3 {
		t.Fatalf("condition looked at %d times, want 3", got)
	}
}
