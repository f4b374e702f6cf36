// Package testwait is the tests' one way to wait for an effect that
// happens on another goroutine or in another process: poll a condition
// until it holds. The bound only keeps a broken test from hanging; it is
// never a timing assertion, so it is generous for a loaded CI machine.
package testwait

import (
	"testing"
	"time"
)

// Bound is how long For polls before it fails the test.
const Bound = 30 * time.Second

// For polls cond every few milliseconds until it holds, and fails t,
// naming what it waited for, when Bound passes first.
func For(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(Bound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", Bound, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
