package fleet

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/mailgate/mailgate/guard"
)

// cmdLog records the names of the commands a client sends (pipelines
// included).
type cmdLog struct {
	mu    sync.Mutex
	names []string
}

func (l *cmdLog) add(cmds ...redis.Cmder) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range cmds {
		l.names = append(l.names, strings.ToLower(c.Name()))
	}
}

func (l *cmdLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.names
	l.names = nil
	return out
}

func (l *cmdLog) DialHook(next redis.DialHook) redis.DialHook { return next }

func (l *cmdLog) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, c redis.Cmder) error {
		l.add(c)
		return next(ctx, c)
	}
}

func (l *cmdLog) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cs []redis.Cmder) error {
		l.add(cs...)
		return next(ctx, cs)
	}
}

// Unlock finds the login's (login, address) windows through the login's
// own index, never by a SCAN of the keyspace, deletes exactly them, and
// the index lives no longer than the windows it names.
func TestFleetUnlockTouchesOnlyTheLogin(t *testing.T) {
	m := miniredis.RunT(t)
	c := testConfig(t, m.Addr())
	a, b := newNode(t, c, nil), newNode(t, c, nil)
	p := c.Shared.KeyPrefix
	// Two wrong passwords for victim from two addresses, on two nodes,
	// and one for a login whose name starts like victim's.
	a.try("victim", "203.0.113.1", "w1", guard.WrongPassword)
	b.try("victim", "2001:db8::7", "w2", guard.WrongPassword)
	a.try("victimx", "203.0.113.1", "w3", guard.WrongPassword)
	mine := []string{p + "fp:6:victim|203.0.113.1", p + "fp:6:victim|2001:db8::7"}
	other := p + "fp:7:victimx|203.0.113.1"
	for _, k := range append(mine, other) {
		if !m.Exists(k) {
			t.Fatalf("no %s; keys: %v", k, m.Keys())
		}
	}
	idx := p + "fx:victim"
	if ttl := m.TTL(idx); ttl <= 0 || ttl > c.Window {
		t.Fatalf("index %s: TTL %v, want (0, guard.window %v]", idx, ttl, c.Window)
	}

	var log cmdLog
	a.s.c.AddHook(&log)
	a.g.Unlock("victim")
	for _, n := range log.take() {
		if n == "scan" || n == "keys" {
			t.Fatalf("Unlock sent %s: it must touch only the login's keys", strings.ToUpper(n))
		}
	}
	for _, k := range append(mine, idx) {
		if m.Exists(k) {
			t.Fatalf("%s left after Unlock", k)
		}
	}
	if !m.Exists(other) {
		t.Fatalf("Unlock of victim deleted %s", other)
	}
	// The unlock reaches the other node too.
	if v, _ := b.try("victim", "203.0.113.1", "right", guard.Passed); !v.Allow {
		t.Fatalf("after Unlock on node a, node b: %+v", v)
	}
}
