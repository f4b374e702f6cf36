package policy

// Targets ("where" in a rule) and login names ("who").

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"unicode/utf8"

	"github.com/mailgate/mailgate/geo"
)

// maxLogin bounds a login we look up: RFC 5321 4.5.3.1.1 (local part 64
// octets) + "@" + 4.5.3.1.2 (domain 255 octets). Longer logins cannot be
// mail addresses; they still get a decision, through the slow path.
const maxLogin = 64 + 1 + 255

// builtinLabels are the labels geo gives addresses without a country.
// Rules may name other labels (geo overrides can invent them); policy
// check points those out because a typo there silently never matches.
var builtinLabels = map[string]bool{
	"loopback": true, "private": true, "link-local": true, "cgnat": true,
	"documentation": true, "reserved": true, "multicast": true,
	"unspecified": true, "unknown": true,
}

type targetKind uint8

const (
	targetAny     targetKind = iota + 1 // "any": every address
	targetCode                          // country code or geo label, vs Location.Code()
	targetNetwork                       // an IP (as /32, /128) or CIDR
)

// target is one "where" of a rule.
type target struct {
	kind targetKind
	code string       // targetCode: upper-case country or lower-case label
	net  netip.Prefix // targetNetwork: masked
}

var errTarget = errors.New("is not a country code, label, IP address, CIDR or \"any\"")

// parseTarget reads one "where": "any", a two-letter country code (any
// case), a geo label such as "private", an IP address or a CIDR, read
// by geo.ParseNetwork: a CIDR with host bits set is refused, as
// "10.1.2.3/8" is more likely a typo than a wish for 10.0.0.0/8.
func parseTarget(s string) (target, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "any" || s == "*":
		return target{kind: targetAny}, nil
	case strings.Contains(s, "/") || strings.ContainsAny(s, ":."):
		// One rule for every network list (geo.ParseNetwork): canonical
		// CIDRs only, IPv4-mapped forms become IPv4.
		p, err := geo.ParseNetwork(s)
		if err != nil {
			return target{}, err
		}
		return target{kind: targetNetwork, net: p}, nil
	case len(s) == 2 && isLetter(s[0]) && isLetter(s[1]):
		return target{kind: targetCode, code: strings.ToUpper(s)}, nil
	case isLabel(s):
		return target{kind: targetCode, code: strings.ToLower(s)}, nil
	}
	return target{}, fmt.Errorf("%q %w", s, errTarget)
}

func isLetter(c byte) bool { return 'a' <= c|0x20 && c|0x20 <= 'z' }

// isLabel: a geo label, 3 to 32 of [a-z0-9-], starting with a letter.
func isLabel(s string) bool {
	if len(s) < 3 || len(s) > 32 || !isLetter(s[0]) {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isLetter(c) && !('0' <= c && c <= '9') && c != '-' {
			return false
		}
	}
	return true
}

// String writes the target the way parseTarget reads it back.
func (t target) String() string {
	switch t.kind {
	case targetAny:
		return "any"
	case targetCode:
		return t.code
	case targetNetwork:
		if t.net.IsSingleIP() {
			return t.net.Addr().String()
		}
		return t.net.String()
	}
	return "?"
}

// match reports whether an address placed at code is inside t.
func (t *target) match(a netip.Addr, code string) bool {
	switch t.kind {
	case targetAny:
		return true
	case targetCode:
		return t.code == code
	case targetNetwork:
		return t.net.Contains(a)
	}
	return false
}

// covers reports whether every address t matches is also matched by o.
func (t target) coveredBy(o target) bool {
	switch {
	case o.kind == targetAny:
		return true
	case t.kind == targetAny:
		return false
	case t.kind == targetCode && o.kind == targetCode:
		return t.code == o.code
	case t.kind == targetNetwork && o.kind == targetNetwork:
		return o.net.Bits() <= t.net.Bits() && o.net.Contains(t.net.Addr())
	}
	return false
}

// normLogin is the one spelling of a login used as a map key: ASCII
// letters in lower case, with the default domain added when it has no "@".
// Only ASCII is folded: Unicode folding would make distinct logins equal
// (U+212A KELVIN SIGN lower-cases to "k"). Used at
// compile time and for overlong logins; lookupKey is its allocation-free
// twin.
func normLogin(login, defDomain string) string {
	l := login
	if strings.IndexFunc(l, func(r rune) bool { return 'A' <= r && r <= 'Z' }) >= 0 {
		b := []byte(login)
		for i, c := range b {
			if 'A' <= c && c <= 'Z' {
				b[i] = c + 'a' - 'A'
			}
		}
		l = string(b)
	}
	if defDomain != "" && l != "" && !strings.Contains(l, "@") {
		l += "@" + normLogin(defDomain, "")
	}
	return l
}

// lookupKey writes normLogin(login, defDomain) into buf and returns it with
// the offset of the "@" before the domain (or -1). ok is false when the
// result would not fit; the caller then uses normLogin. defDomain must
// already be lower case.
func lookupKey(buf *[maxLogin]byte, login, defDomain string) (key []byte, at int, ok bool) {
	n := len(login)
	if n == 0 || n > maxLogin {
		return nil, -1, false
	}
	at = -1
	for i := 0; i < n; i++ {
		c := login[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c == '@' {
			at = i
		}
		buf[i] = c
	}
	if at < 0 && defDomain != "" {
		if n+1+len(defDomain) > maxLogin {
			return nil, -1, false
		}
		at = n
		buf[n] = '@'
		n += 1 + copy(buf[n+1:], defDomain)
	}
	return buf[:n], at, true
}

// domainOf returns the part after the last "@" of a normalised login.
func domainOf(l string) string {
	if i := strings.LastIndexByte(l, '@'); i >= 0 {
		return l[i+1:]
	}
	return ""
}

// checkDomain validates a domain name as used in default_domain and
// "@domain" rules: LDH labels, no trailing dot, at most 255 octets.
func checkDomain(d string) error {
	if d == "" || len(d) > 255 {
		return fmt.Errorf("%q is not a domain name", d)
	}
	for _, l := range strings.Split(d, ".") {
		if l == "" || len(l) > 63 {
			return fmt.Errorf("%q is not a domain name", d)
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !isLetter(c) && !('0' <= c && c <= '9') && c != '-' && c != '_' && c < utf8.RuneSelf {
				return fmt.Errorf("%q is not a domain name", d)
			}
		}
	}
	return nil
}

// checkLogin refuses logins that could not come from a client or that
// would break a file line: control characters, spaces, "|", too long.
func checkLogin(u string) error {
	if u == "" {
		return errors.New("empty login")
	}
	if len(u) > maxLogin {
		return fmt.Errorf("login longer than %d octets", maxLogin)
	}
	if !utf8.ValidString(u) {
		return errors.New("login is not valid UTF-8")
	}
	for _, r := range u {
		if r <= ' ' || r == 0x7f || r == '|' {
			return fmt.Errorf("login %q contains a space, control character or \"|\"", u)
		}
	}
	if u[0] == '#' {
		return fmt.Errorf("login %q starts with \"#\", which the user file reads as a comment", u)
	}
	return nil
}
