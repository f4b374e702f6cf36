package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Issue #22 item 7: check-config prints the warnings serve gives at
// start-up (here the stale embedded database and the accepted insecure
// admin listener), from the same function.
func TestCheckConfigPrintsStartWarnings(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "mailgate.yaml")
	yaml := "hostname: mail.example.test\nlisteners: [{name: imap, protocol: imap, address: \"[::1]:0\", tls: none}]\n" +
		"tls: {self_signed: true}\ngeo_update: {max_age: 1h}\nadmin: {address: \"0.0.0.0:9100\", allow_insecure: true}\n"
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := runCheckConfig([]string{"-config", cfgPath}, &out, &errOut); code != 0 {
		t.Fatalf("check-config = %d, stderr:\n%s", code, errOut.String())
	}
	for _, want := range []string{
		"the embedded geo database is older than geo_update.max_age",
		"admin.allow_insecure accepts: admin.address",
	} {
		if !strings.Contains(errOut.String(), "level=WARN msg=\""+want) {
			t.Errorf("check-config does not warn %q:\n%s", want, errOut.String())
		}
	}
}

func TestListensOnIPv6(t *testing.T) {
	for _, tt := range []struct {
		addrs []string
		want  bool
	}{
		{[]string{"127.0.0.1:993"}, false},
		{[]string{"192.0.2.1:993", "mail.example.org:993"}, false},
		{[]string{"127.0.0.1:993", "[::1]:993"}, true},
		{[]string{":993"}, true},
		{[]string{"0.0.0.0:993"}, true}, // Go's "tcp" listener is dual-stack
		{[]string{"[::]:993"}, true},
		{[]string{"[::ffff:192.0.2.1]:993"}, false},
	} {
		if got := listensOnIPv6(tt.addrs); got != tt.want {
			t.Errorf("listensOnIPv6(%q) = %v, want %v", tt.addrs, got, tt.want)
		}
	}
}

// A token file protects only what changes something: an admin listener
// reachable from other hosts still serves metrics and readiness to anyone,
// and check-config says so (attack review of issue #14, finding 6).
func TestCheckConfigWarnsOpenReadOnlyAdmin(t *testing.T) {
	dir := t.TempDir()
	token := filepath.Join(dir, "admin.token")
	if err := os.WriteFile(token, []byte("0123456789abcdef0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "mailgate.yaml")
	yaml := "hostname: mail.example.test\nlisteners: [{name: imap, protocol: imap, address: \"127.0.0.1:0\", tls: none}]\n" +
		"tls: {self_signed: true}\nadmin: {address: \"0.0.0.0:9100\", token_file: " + token + "}\n"
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := runCheckConfig([]string{"-config", cfgPath}, &out, &errOut); code != 0 {
		t.Fatalf("check-config = %d, stderr:\n%s", code, errOut.String())
	}
	if !strings.Contains(errOut.String(), "/metrics, /readyz and /healthz answer without the token") {
		t.Errorf("check-config does not warn that read-only endpoints are open:\n%s", errOut.String())
	}
}
