package geo

import (
	"fmt"
	"net/netip"
	"slices"
)

// override is one compiled Config.Overrides entry.
type override struct {
	p   netip.Prefix
	c   prefix128 // p compiled
	loc Location
}

// maxLabelLen bounds admin labels: they appear in log lines and metric
// label values, which must stay short.
const maxLabelLen = 32

// parseOverride compiles one override. The key is a network as
// ParseNetwork reads it (a canonical CIDR or an address); the value is an ISO 3166-1 alpha-2 code (any case)
// or a label: a lower-case word of letters, digits and '-' that is not two
// letters long, so it can never be mistaken for a country.
func parseOverride(key, value string) (override, error) {
	p, err := ParseNetwork(key) // one rule for every network list (netlist.go)
	if err != nil {
		return override{}, err
	}
	o := override{p: p, c: compilePrefix(p), loc: Location{Source: "override"}}
	switch {
	case isAlpha2(value):
		code := upper2(value)
		name := CountryName(code)
		if name == "" {
			hint := ""
			if code == "UK" {
				hint = " (the United Kingdom is GB)"
			}
			return override{}, fmt.Errorf("%q is not an ISO 3166-1 alpha-2 country code%s", value, hint)
		}
		o.loc.Country, o.loc.Name = code, name
	case validLabel(value):
		o.loc.Label, o.loc.Name = value, "override: "+value
		if n, ok := labelNames[value]; ok {
			o.loc.Name = n
		}
	default:
		return override{}, fmt.Errorf("value %q is neither a country code nor a label (lower-case letters, digits, '-', 3 to %d characters)", value, maxLabelLen)
	}
	return o, nil
}

// validLabel reports whether s may be an admin label.
func validLabel(s string) bool {
	if len(s) < 3 || len(s) > maxLabelLen || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := range len(s) {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}

// sortOverrides orders overrides longest prefix first (IPv4 and IPv6 never
// both match, so comparing bit counts across families is harmless); ties
// are ordered by address so the order never depends on map iteration.
func sortOverrides(os []override) {
	slices.SortFunc(os, func(a, b override) int {
		if a.p.Bits() != b.p.Bits() {
			return b.p.Bits() - a.p.Bits()
		}
		return a.p.Addr().Compare(b.p.Addr())
	})
}
