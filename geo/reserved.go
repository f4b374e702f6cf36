package geo

import (
	"encoding/binary"
	"net/netip"
)

// The labels geo gives addresses that no database may place. Policy rules
// may name them like country codes ("allow private").
const (
	LabelLoopback      = "loopback"
	LabelPrivate       = "private"
	LabelLinkLocal     = "link-local"
	LabelCGNAT         = "cgnat"
	LabelDocumentation = "documentation"
	LabelReserved      = "reserved"
	LabelMulticast     = "multicast"
	LabelUnspecified   = "unspecified"
	// LabelUnknown: a public address no configured database places.
	LabelUnknown = "unknown"
)

// labelNames describes each built-in label for Location.Name.
var labelNames = map[string]string{
	LabelLoopback:      "loopback address",
	LabelPrivate:       "private network",
	LabelLinkLocal:     "link-local address",
	LabelCGNAT:         "carrier-grade NAT shared space",
	LabelDocumentation: "documentation or benchmarking range",
	LabelReserved:      "reserved address",
	LabelMulticast:     "multicast address",
	LabelUnspecified:   "unspecified address",
	LabelUnknown:       "not in any database",
}

// reservedRange is one entry of the special-purpose tables.
type reservedRange struct {
	p     netip.Prefix
	label string
	c     prefix128 // p compiled
}

func rr(cidr, label string) reservedRange {
	p := netip.MustParsePrefix(cidr)
	return reservedRange{p: p, label: label, c: compilePrefix(p)}
}

// reserved4 and reserved6 follow the IANA IPv4 and IPv6 Special-Purpose
// Address Registries (RFC 6890 and its updates). Geo databases place some
// of these ranges in real countries (the bundled data puts 192.168.0.0/16
// in AU and 2001:db8::/32 in JP), so they are classified before any
// database is asked. Ranges that are globally routable anycast services
// (AS112, PCP/TURN anycast, AMT) are not login clients and are left to the
// databases. Entries are checked in order; more specific ones come first.
var reserved4 = []reservedRange{
	rr("0.0.0.0/32", LabelUnspecified),        // RFC 1122 3.2.1.3
	rr("0.0.0.0/8", LabelReserved),            // "this network", RFC 791
	rr("10.0.0.0/8", LabelPrivate),            // RFC 1918
	rr("100.64.0.0/10", LabelCGNAT),           // RFC 6598
	rr("127.0.0.0/8", LabelLoopback),          // RFC 1122
	rr("169.254.0.0/16", LabelLinkLocal),      // RFC 3927
	rr("172.16.0.0/12", LabelPrivate),         // RFC 1918
	rr("192.0.0.0/24", LabelReserved),         // IETF protocol assignments, RFC 6890
	rr("192.0.2.0/24", LabelDocumentation),    // TEST-NET-1, RFC 5737
	rr("192.88.99.0/24", LabelReserved),       // former 6to4 relay anycast, RFC 7526
	rr("192.168.0.0/16", LabelPrivate),        // RFC 1918
	rr("198.18.0.0/15", LabelDocumentation),   // benchmarking, RFC 2544
	rr("198.51.100.0/24", LabelDocumentation), // TEST-NET-2, RFC 5737
	rr("203.0.113.0/24", LabelDocumentation),  // TEST-NET-3, RFC 5737
	rr("224.0.0.0/4", LabelMulticast),         // RFC 5771
	rr("240.0.0.0/4", LabelReserved),          // RFC 1112; includes 255.255.255.255
}

var reserved6 = []reservedRange{
	rr("::/128", LabelUnspecified),          // RFC 4291 2.5.2
	rr("::1/128", LabelLoopback),            // RFC 4291 2.5.3
	rr("64:ff9b:1::/48", LabelPrivate),      // local-use NAT64, RFC 8215
	rr("fc00::/7", LabelPrivate),            // unique local, RFC 4193
	rr("fe80::/10", LabelLinkLocal),         // RFC 4291 2.5.6
	rr("ff00::/8", LabelMulticast),          // RFC 4291 2.7
	rr("2001::/23", LabelReserved),          // IETF protocol assignments, RFC 2928 (Teredo is unwrapped first)
	rr("2001:db8::/32", LabelDocumentation), // RFC 3849
	rr("3fff::/20", LabelDocumentation),     // RFC 9637
	rr("5f00::/16", LabelReserved),          // SRv6 SIDs, RFC 9602
	rr("2000::/3", ""),                      // global unicast: ask the databases
	rr("::/0", LabelReserved),               // everything else is unassigned by IANA
}

// classify returns the label of a special-purpose address, or "" when the
// address is global and the databases should be asked. a is unmapped.
func classify(a netip.Addr) string {
	table := reserved6
	if a.Is4() {
		table = reserved4
	}
	hi, lo := split(a)
	for i := range table {
		if table[i].c.contains(hi, lo) {
			return table[i].label
		}
	}
	return ""
}

// Prefixes whose addresses carry the client's real IPv4 address.
var (
	prefix6to4   = netip.MustParsePrefix("2002::/16")    // RFC 3056 2: 2002:AABB:CCDD::/48
	prefixTeredo = netip.MustParsePrefix("2001::/32")    // RFC 4380 4: client address in the last 32 bits, inverted
	prefixNAT64  = netip.MustParsePrefix("64:ff9b::/96") // RFC 6052 2.1: IPv4 in the last 32 bits
)

// normalize turns a into the address to place: zone dropped, IPv4-mapped
// IPv6 as IPv4, and 6to4, Teredo and NAT64 well-known-prefix addresses as
// the IPv4 address they embed. The tunnel's return traffic goes to that
// IPv4 address, so it is where the client is; and it keeps answers the same
// for every database format (ip2location-go does the first two itself,
// maxminddb does none).
func normalize(a netip.Addr) netip.Addr {
	a = a.WithZone("").Unmap()
	if !a.Is6() {
		return a
	}
	b := a.As16()
	switch {
	case prefix6to4.Contains(a):
		return netip.AddrFrom4([4]byte(b[2:6]))
	case prefixTeredo.Contains(a):
		x := ^binary.BigEndian.Uint32(b[12:])
		return netip.AddrFrom4(be4(x))
	case prefixNAT64.Contains(a):
		return netip.AddrFrom4([4]byte(b[12:16]))
	}
	return a
}

// prefix128 is a prefix compiled for a branch-free test: IPv4 prefixes are
// stored in their IPv4-mapped IPv6 form, so one comparison of two 64-bit
// halves serves both families (netip.Prefix.Contains costs several times
// more, which adds up over a table on every login).
type prefix128 struct{ hi, lo, mhi, mlo uint64 }

func compilePrefix(p netip.Prefix) prefix128 {
	bits := p.Bits()
	if p.Addr().Is4() {
		bits += 96
	}
	b := p.Masked().Addr().As16()
	var c prefix128
	c.hi, c.lo = binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
	switch {
	case bits >= 128:
		c.mhi, c.mlo = ^uint64(0), ^uint64(0)
	case bits > 64:
		c.mhi, c.mlo = ^uint64(0), ^uint64(0)<<(128-bits)
	case bits > 0:
		c.mhi = ^uint64(0) << (64 - bits)
	}
	return c
}

// split returns a's 16-byte form as two halves (IPv4 as IPv4-mapped).
func split(a netip.Addr) (hi, lo uint64) {
	b := a.As16()
	return binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
}

func (c *prefix128) contains(hi, lo uint64) bool {
	return hi&c.mhi == c.hi && lo&c.mlo == c.lo
}
