package backend

import (
	"context"
	"sync"
	"time"
)

// servedList is a backend's last good capability list (POP3 CAPA lines,
// SMTP EHLO keywords) as the proxy shows it to clients. It is served
// while fresh, and stale while one caller refreshes it, so that a busy
// proxy opens one backend connection per refresh, not one per client;
// when the backend cannot be asked, the last good list is served.
type servedList struct {
	mu   sync.Mutex
	list []string
	at   time.Time
	busy bool // a refresh is under way
}

// get returns the list, calling fetch when it is missing or older than
// ttl and no other refresh is under way. stale is called (with fetch's
// error) when a failed refresh falls back on the last good list.
func (s *servedList) get(ctx context.Context, ttl time.Duration, fetch func(context.Context) ([]string, error), stale func(error)) ([]string, error) {
	s.mu.Lock()
	list, at := s.list, s.at
	if list != nil && (time.Since(at) < ttl || s.busy) {
		s.mu.Unlock()
		return list, nil
	}
	s.busy = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.busy = false
		s.mu.Unlock()
	}()
	fresh, err := fetch(ctx)
	if err != nil {
		if list != nil {
			stale(err)
			return list, nil
		}
		return nil, err
	}
	s.set(fresh)
	return fresh, nil
}

// set stores a list just learnt.
func (s *servedList) set(list []string) {
	s.mu.Lock()
	s.list, s.at = list, time.Now()
	s.mu.Unlock()
}

// greetMemo remembers the capabilities a login connection was offered,
// with that connection's greeting, so that the next login to a backend
// greeting the same way need not ask again (one round trip and one
// backend command less per login). Logins drop it at any backend error;
// a reload builds new backends and so starts with none.
type greetMemo struct {
	mu    sync.Mutex
	greet string
	list  []string // nil: nothing remembered
	at    time.Time
}

// known returns the list remembered for greet within ttl, nil when
// there is none (another greeting, none yet, or too old).
func (m *greetMemo) known(greet string, ttl time.Duration) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.list == nil || m.greet != greet || time.Since(m.at) >= ttl {
		return nil
	}
	return m.list
}

func (m *greetMemo) remember(greet string, list []string) {
	m.mu.Lock()
	m.greet, m.list, m.at = greet, list, time.Now()
	m.mu.Unlock()
}

func (m *greetMemo) forget() {
	m.mu.Lock()
	m.greet, m.list = "", nil
	m.mu.Unlock()
}
