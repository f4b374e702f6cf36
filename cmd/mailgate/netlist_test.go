package main

import (
	"net/netip"
	"strings"
	"testing"
)

// Every network list in the config follows one rule (geo.ParseNetwork):
// a CIDR with host bits set is an error naming the network, never
// silently masked; IPv4-mapped forms are IPv4.
func TestConfigNetworkListsOneRule(t *testing.T) {
	for in, want := range map[string]string{
		"guard:\n  trusted_networks: [10.1.2.3/8]\n":                                                            `guard.trusted_networks[0]: "10.1.2.3/8" has host bits set; did you mean 10.0.0.0/8?`,
		"guard:\n  deny_networks: [192.0.2.7/24]\n":                                                             `guard.deny_networks[0]: "192.0.2.7/24" has host bits set; did you mean 192.0.2.0/24?`,
		"listeners:\n  - {name: a, protocol: imap, address: ':993', proxy_protocol_from: [10.1.2.3/8]}\n":       `listeners[0].proxy_protocol_from[0]: "10.1.2.3/8" has host bits set; did you mean 10.0.0.0/8?`,
		"listeners:\n  - {name: a, protocol: imap, address: ':993', plaintext_from: ['::ffff:10.1.2.3/104']}\n": `listeners[0].plaintext_from[0]: "::ffff:10.1.2.3/104" has host bits set; did you mean 10.0.0.0/8?`,
		"policy:\n  always_allow: [10.0.0.1/8]\n":                                                               `policy.always_allow[0]: "10.0.0.1/8" has host bits set; did you mean 10.0.0.0/8?`,
	} {
		_, err := parseConfig([]byte("tls: {self_signed: true}\n" + in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want %q", in, err, want)
		}
	}
}

// An IPv4-mapped network in proxy_protocol_from is the IPv4 network, so
// it matches the (unmapped) address of an IPv4 balancer.
func TestProxyFromIPv4MappedMatches(t *testing.T) {
	l, err := proxyListener(ListenerConfig{Name: "a", Protocol: "imap", TLS: "none",
		ProxyFrom: []string{"::ffff:10.0.0.0/104"}, PlaintextFrom: []string{"::ffff:192.0.2.7"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.ProxyFrom) != 1 || !l.ProxyFrom[0].Contains(netip.MustParseAddr("10.9.8.7")) {
		t.Errorf("proxy_protocol_from = %v, want it to contain 10.9.8.7", l.ProxyFrom)
	}
	if len(l.PlaintextFrom) != 1 || l.PlaintextFrom[0] != netip.MustParsePrefix("192.0.2.7/32") {
		t.Errorf("plaintext_from = %v, want 192.0.2.7/32", l.PlaintextFrom)
	}
}
