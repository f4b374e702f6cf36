package guard

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestBackendSlot(t *testing.T) {
	g, _ := newTestGuard(t, func(c *Config) {
		c.Backend = BackendConfig{MaxConcurrent: 2, Queue: 1, QueueWait: 10 * time.Second}
	})
	ctx := t.Context()
	r1, err := g.BackendSlot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := g.BackendSlot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The third waits in the queue until a slot is released.
	got := make(chan error, 1)
	var r3 func()
	go func() {
		var err error
		r3, err = g.BackendSlot(ctx)
		got <- err
	}()
	for g.slotsQueued() != 1 {
		time.Sleep(time.Millisecond)
	}
	// The queue (1) is full: a fourth is refused at once.
	if _, err := g.BackendSlot(ctx); !errors.Is(err, ErrBackendBusy) {
		t.Fatalf("BackendSlot with the queue full = %v, want ErrBackendBusy", err)
	}
	r1()
	r1() // a second release must not free another slot
	if err := <-got; err != nil {
		t.Fatalf("queued BackendSlot = %v, want a slot after a release", err)
	}
	// Both slots are taken again (r2, r3): nothing is free.
	short, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := g.BackendSlot(short); !errors.Is(err, context.Canceled) {
		t.Fatalf("BackendSlot with a cancelled context = %v, want context.Canceled", err)
	}
	r2()
	r3()
	if n := g.slotsInUse(); n != 0 {
		t.Fatalf("%d slots held after all released", n)
	}
}

func TestBackendSlotWaitEnds(t *testing.T) {
	g, _ := newTestGuard(t, func(c *Config) {
		c.Backend = BackendConfig{MaxConcurrent: 1, Queue: 4, QueueWait: 20 * time.Millisecond}
	})
	r, err := g.BackendSlot(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer r()
	if _, err := g.BackendSlot(t.Context()); !errors.Is(err, ErrBackendBusy) {
		t.Fatalf("BackendSlot past backend.queue_wait = %v, want ErrBackendBusy", err)
	}
	if n := g.slotsQueued(); n != 0 {
		t.Fatalf("%d still counted as waiting", n)
	}
}

func TestBackendSlotUncapped(t *testing.T) {
	g, _ := newTestGuard(t, func(c *Config) { c.Backend.MaxConcurrent = 0 })
	for range 1000 {
		if _, err := g.BackendSlot(t.Context()); err != nil {
			t.Fatalf("uncapped BackendSlot = %v", err)
		}
	}
}

func (g *Guard) slotsQueued() int {
	g.slots.mu.Lock()
	defer g.slots.mu.Unlock()
	return g.slots.queued
}

func (g *Guard) slotsInUse() int {
	g.slots.mu.Lock()
	defer g.slots.mu.Unlock()
	return g.slots.inUse
}
