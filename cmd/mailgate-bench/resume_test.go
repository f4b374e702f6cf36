package main

import (
	"context"
	"testing"
	"time"
)

// TestResumption: with -resume each worker offers the TLS 1.3 ticket of
// its own last connection, so every handshake after a worker's first
// resumes, and the share counts them.
func TestResumption(t *testing.T) {
	addr := fakeServer(t, true, imapFake("alice@example.test", "pw"))
	tg := target{addr: addr, tls: true, user: "alice@example.test", pass: "pw", step: 5 * time.Second, resume: newResumption()}
	r := runLogins(context.Background(), 2, time.Minute, 20, func(ctx context.Context) error { return loginOnce(ctx, "imap", tg) }, nil, nil)
	if r.OK != 20 {
		t.Fatalf("%d logins ok, errors %v (%s); want 20", r.OK, r.Errors, r.FirstErr)
	}
	// Two workers, so two full handshakes and 18 resumed ones.
	if got, full := tg.resume.resumed.Load(), tg.resume.full.Load(); got != 18 || full != 2 {
		t.Errorf("resumed %d, full %d; want 18 and 2 (one full handshake per worker)", got, full)
	}
	if s := tg.resume.share(); s != 0.9 {
		t.Errorf("share %v, want 0.9", s)
	}

	// Without -resume no handshake resumes.
	tg.resume = nil
	if err := loginOnce(context.Background(), "imap", tg); err != nil {
		t.Fatal(err)
	}
}
