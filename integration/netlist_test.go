//go:build integration

package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestIPv4MappedNetworksMatch: an IPv4-mapped network in
// proxy_protocol_from and plaintext_from is the IPv4 network it carries
// (docs/config.md, "Networks"). A balancer at 127.0.0.1 is trusted
// through ::ffff:127.0.0.0/104, and the GB client it forwards logs in
// with plaintext allowed through ::ffff:0.0.0.0/96, against the real
// Dovecot. Before, neither network matched an IPv4 peer: the PROXY
// header was refused as untrusted.
func TestIPv4MappedNetworksMatch(t *testing.T) {
	hs := need(t)
	m := startMailgate(t, func(port int) string {
		return fmt.Sprintf(`hostname: mail.example.test
log: {level: debug, format: text}
admin: {address: "off"}
listeners:
  - {name: imap-lb, protocol: imap, address: "127.0.0.1:%d", tls: none, proxy_protocol_from: ["::ffff:127.0.0.0/104"], plaintext_from: ["::ffff:0.0.0.0/96"]}
backends:
  imap: {address: "127.0.0.1:%d", tls: none, forward_client: true}
  pop3: {address: "127.0.0.1:%d", tls: none}
  smtp: {address: "127.0.0.1:%d", tls: none}
tls: {self_signed: true}
policy: {allow_countries: [GB]}
`, port, hs.imapPort, hs.pop3Port, hs.smtpPort)
	})
	r, _, err := taggedLogin(m.Addr["imap-lb"], addrGB, "a1", "alice@example.test", users["alice@example.test"])
	if err != nil || !strings.HasPrefix(r, "a1 OK [CAPABILITY IMAP4rev1") {
		t.Fatalf("login through ::ffff:127.0.0.0/104: %q, %v; want a1 OK [CAPABILITY ...]\n%s", r, err, m.Log())
	}
}

// TestCheckConfigRefusesHostBits: a network with host bits set is an
// error in every list, named with the network meant, where
// trusted_networks used to mask it silently.
func TestCheckConfigRefusesHostBits(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "mailgate.yaml")
	if err := os.WriteFile(cfg, []byte(`tls: {self_signed: true}
listeners:
  - {name: imap-lb, protocol: imap, address: "127.0.0.1:1143", tls: none, proxy_protocol_from: ["127.0.0.1/8"]}
guard:
  trusted_networks: [10.1.2.3/8]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	out := runMailgate(t, 1, "check-config", "-config", cfg)
	for _, want := range []string{
		`guard.trusted_networks[0]: "10.1.2.3/8" has host bits set; did you mean 10.0.0.0/8?`,
		`listeners[0].proxy_protocol_from[0]: "127.0.0.1/8" has host bits set; did you mean 127.0.0.0/8?`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("check-config output lacks %q:\n%s", want, out)
		}
	}
}
