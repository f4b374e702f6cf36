package proxy

// Backend health: whether a protocol's backend is known to be down. It is
// read before an attempt's verdict is known, so the reply to a login
// during an outage never depends on the verdict (docs/backends.md,
// "Timeouts and outages").

import (
	"sync/atomic"
	"time"

	"github.com/mailgate/mailgate/policy"
)

// backendProbeInterval is how long a backend stays known down after a
// failure to connect to it; then the next allowed attempt tries it again.
const backendProbeInterval = 10 * time.Second

// backendHealth is one backend's state. The zero value is up.
type backendHealth struct {
	downUntil atomic.Int64 // UnixNano until which the backend counts as down; 0: up
}

// down reports whether the backend is known down now.
func (h *backendHealth) down() bool { return time.Now().UnixNano() < h.downUntil.Load() }

// markDown records a failure to connect (dial, TLS, greeting).
func (h *backendHealth) markDown() {
	h.downUntil.Store(time.Now().Add(backendProbeInterval).UnixNano())
}

// markUp records a backend that answered a login (yes or no).
func (h *backendHealth) markUp() { h.downUntil.Store(0) }

// healthTable holds one backendHealth per protocol; the zero value is
// all up. A Server keeps one for its life, across reloads.
type healthTable struct{ imap, pop3, smtp backendHealth }

// of returns p's backend state.
func (t *healthTable) of(p policy.Protocol) *backendHealth {
	switch p {
	case policy.POP3:
		return &t.pop3
	case policy.SMTP:
		return &t.smtp
	}
	return &t.imap
}
