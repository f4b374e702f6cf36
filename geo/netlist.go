package geo

// Network lists: the one parser for every list of networks an admin
// writes (policy rules, geo.overrides keys, guard.trusted_networks and
// deny_networks, listeners' proxy_protocol_from and plaintext_from).
//
// It lives here because every package that reads such a list (cmd,
// proxy, policy, the guard) may import geo, and geo imports no other
// mailgate package: a separate leaf would be one more package for two
// functions, and geo's own overrides need the same rule. One parser means
// one rule, documented in docs/config.md ("Networks"):
//
//   - a CIDR must be canonical: "10.1.2.3/8" is an error naming the
//     network ("did you mean 10.0.0.0/8?"), never silently masked, as a
//     typo there widens a trust list by millions of addresses;
//   - a bare address is a /32 or /128;
//   - an IPv4-mapped IPv6 address or prefix (::ffff:a.b.c.d/N, N >= 96)
//     is the IPv4 address or prefix it carries (/N-96), because addresses
//     are unmapped before matching (the kernel reports an IPv4 client on
//     a dual-stack socket as ::ffff:a.b.c.d);
//   - zones ("fe80::1%eth0") are refused: nothing matches them.

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// ParseNetwork reads one network: a canonical CIDR ("192.0.2.0/24",
// "2001:db8::/32") or a bare address (a /32 or /128). IPv4-mapped forms
// come back as IPv4. The error quotes s and, for a CIDR
// with host bits set, names the network; callers add where s came from.
func ParseNetwork(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is neither a CIDR nor an address", s)
		}
		// netip.ParsePrefix refuses zones; a prefix is always valid here.
		if p.Addr().Is4In6() {
			if p.Bits() < 96 {
				return netip.Prefix{}, fmt.Errorf("%q: an IPv4-mapped prefix shorter than /96 spans non-IPv4 space", s)
			}
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		if m := p.Masked(); m != p {
			return netip.Prefix{}, fmt.Errorf("%q has host bits set; did you mean %s?", s, m)
		}
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is neither a CIDR nor an address", s)
	}
	if a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%q has a zone, which no client address matches", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// ParseNetworks reads a list with ParseNetwork. Each bad entry is one
// joined error prefixed "path[i]: "; the good entries are returned in
// order either way.
func ParseNetworks(in []string, path string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	var errs []error
	for i, s := range in {
		p, err := ParseNetwork(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s[%d]: %w", path, i, err))
			continue
		}
		out = append(out, p)
	}
	return out, errors.Join(errs...)
}
