package main

import (
	"strings"
	"testing"
	"time"
)

// backends.<proto>.login_timeout is read per backend and checked.
func TestParseConfigBackendLoginTimeout(t *testing.T) {
	cfg, err := parseConfig([]byte("tls: {self_signed: true}\nbackends:\n  imap: {address: \"127.0.0.1:143\", login_timeout: 4s}\n"))
	if err != nil {
		t.Fatalf("parseConfig: %v", err)
	}
	if got := cfg.Backends.IMAP.LoginTimeout; got != 4*time.Second {
		t.Errorf("backends.imap.login_timeout = %v, want 4s", got)
	}
	_, err = parseConfig([]byte("tls: {self_signed: true}\nbackends:\n  pop3: {address: \"127.0.0.1:110\", login_timeout: -1s}\n"))
	if err == nil || !strings.Contains(err.Error(), "backends.pop3.login_timeout") {
		t.Errorf("negative login_timeout: error %v, want one naming backends.pop3.login_timeout", err)
	}
}
