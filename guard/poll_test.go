package guard

import (
	"testing"
	"time"
)

// A wait the store cannot wake polls with a back-off from sharedPoll up
// to sharedPollMax (jitter of at most half); one it can wake asks only
// every sharedSafetyPoll or so.
func TestNextPollBacksOff(t *testing.T) {
	var base time.Duration
	var waits []time.Duration
	for range 8 {
		var w time.Duration
		w, base = nextPoll(base, false, 0)
		waits = append(waits, w)
	}
	want := []time.Duration{100, 200, 400, 800, 1600, 2000, 2000, 2000}
	for i, w := range waits {
		if w != want[i]*time.Millisecond {
			t.Fatalf("back-off %v, want %v ms", waits, want)
		}
	}
	if w, _ := nextPoll(sharedPollMax, false, 0.999); w < sharedPollMax || w >= sharedPollMax*3/2 {
		t.Fatalf("jittered poll %v outside [%v, %v)", w, sharedPollMax, sharedPollMax*3/2)
	}
	if w, next := nextPoll(200*time.Millisecond, true, 0); w != sharedSafetyPoll || next != 200*time.Millisecond {
		t.Fatalf("with the store's wake-ups: %v (next %v), want %v", w, next, sharedSafetyPoll)
	}
}
