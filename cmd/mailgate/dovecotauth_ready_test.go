package main

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/backend"
)

// With verify: dovecot-auth and a submission listener, /readyz probes
// Dovecot's auth socket: a socket nobody listens on makes it not ready,
// naming backends.smtp.dovecot_auth; without a submission listener, or
// in another verify mode, it is not probed. (The real auth service, up
// and down: integration's TestDovecotAuthReadiness.)
func TestCheckReadyDovecotAuth(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	up := ln.Addr().String()
	missing := filepath.Join(t.TempDir(), "auth-missing")
	cfg := &Config{Listeners: []ListenerConfig{{Protocol: "smtp", TLS: "none"}}, Backends: BackendsConfig{
		IMAP: &BackendConfig{Options: backend.Options{Address: up}},
		POP3: &BackendConfig{Options: backend.Options{Address: up}},
		SMTP: &SMTPBackendConfig{BackendConfig: BackendConfig{Options: backend.Options{Address: up}},
			Verify: backend.VerifyDovecotAuth, DovecotAuth: missing},
	}}
	now := time.Now()
	errs := checkReady(context.Background(), cfg, nil, now)
	if len(errs) != 1 || !strings.Contains(errs[0], "backends.smtp.dovecot_auth "+missing) {
		t.Fatalf("auth socket missing: %q, want backends.smtp.dovecot_auth", errs)
	}
	cfg.Backends.SMTP.Verify = "smtp-auth"
	if errs := checkReady(context.Background(), cfg, nil, now); len(errs) != 0 {
		t.Errorf("verify: smtp-auth probed the auth socket: %q", errs)
	}
	cfg.Backends.SMTP.Verify = backend.VerifyDovecotAuth
	cfg.Listeners[0].Protocol = "imap"
	if errs := checkReady(context.Background(), cfg, nil, now); len(errs) != 0 {
		t.Errorf("no submission listener, yet the auth socket was probed: %q", errs)
	}
}
