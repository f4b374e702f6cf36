package policy

// The compiled policy and the decision walk over it.

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// crule is one (rule, place) pair, ready to match. Rules with several
// places or users become several crules sharing src and reason.
type crule struct {
	t      target
	allow  bool
	protos uint8  // 0: every protocol
	until  int64  // Unix nanoseconds; 0: never expires
	src    string // "file:line"
	reason string
}

// prefixTable finds whether an address is in any of a set of networks with
// one map lookup per distinct prefix length in use (typically a handful),
// longest first, without allocating.
type prefixTable struct {
	lens4, lens6 []int
	m            map[netip.Prefix]string // masked network → source
}

func (t *prefixTable) add(p netip.Prefix, src string) {
	if t.m == nil {
		t.m = map[netip.Prefix]string{}
	}
	if _, dup := t.m[p]; dup {
		return // the first source to name it keeps the credit
	}
	t.m[p] = src
	if p.Addr().Is4() {
		if !slices.Contains(t.lens4, p.Bits()) {
			t.lens4 = append(t.lens4, p.Bits())
		}
	} else if !slices.Contains(t.lens6, p.Bits()) {
		t.lens6 = append(t.lens6, p.Bits())
	}
}

func (t *prefixTable) finish() {
	slices.Sort(t.lens4)
	slices.Reverse(t.lens4)
	slices.Sort(t.lens6)
	slices.Reverse(t.lens6)
}

func (t *prefixTable) lookup(a netip.Addr) (string, bool) {
	if !a.IsValid() || len(t.m) == 0 {
		return "", false
	}
	lens := t.lens6
	if a.Is4() {
		lens = t.lens4
	}
	for _, b := range lens {
		p, err := a.Prefix(b)
		if err != nil {
			continue
		}
		if src, ok := t.m[p]; ok {
			return src, true
		}
	}
	return "", false
}

// compiled is one immutable policy snapshot.
type compiled struct {
	defDomain string            // lower case
	allowCC   map[string]bool   // allow_countries
	denyCodes map[string]string // always_deny countries and labels → source
	denyNets  prefixTable
	allowNets prefixTable
	users     map[string][]crule // normalised login →
	domains   map[string][]crule // lower-case domain →
	everyone  []crule

	// stamps identify the file versions read, for Watch.
	stamps [2]stamp

	// The parsed inputs, for Check.
	cfg Config
	uf  *UserFile
	rf  *RulesFile
}

// Reasons are fixed strings so that Decide does not allocate.
const (
	reasonAlwaysDeny  = "always denied (always_deny)"
	reasonAlwaysAllow = "always allowed network (always_allow)"
	reasonLegacy      = "allowed by the user's line in the user file"
	reasonDefault     = "location is in allow_countries"
	reasonNoRule      = "location is not in allow_countries and no rule allows it"
	ruleDefault       = "policy.allow_countries"
)

var tierReasons = [3][2]string{
	{"denied by a rule for this user", "allowed by a rule for this user"},
	{"denied by a rule for the user's domain", "allowed by a rule for the user's domain"},
	{"denied by a rule for everyone", "allowed by a rule for everyone"},
}

func reasonFor(tier int, allow bool) string {
	if allow {
		return tierReasons[tier][1]
	}
	return tierReasons[tier][0]
}

// compileConfig checks the policy config section and starts a snapshot
// from it. Every problem is reported, each with its key path.
func compileConfig(c *Config) (*compiled, error) {
	cp := &compiled{
		allowCC:   map[string]bool{},
		denyCodes: map[string]string{},
		users:     map[string][]crule{},
		domains:   map[string][]crule{},
		cfg:       *c,
	}
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &Error{Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	for i, s := range c.AllowCountries {
		t, err := parseTarget(s)
		if err != nil || t.kind != targetCode {
			bad(fmt.Sprintf("policy.allow_countries[%d]", i), "%q is not a country code or geo label", s)
			continue
		}
		cp.allowCC[t.code] = true
	}
	if d := c.DefaultDomain; d != "" {
		if err := checkDomain(strings.TrimPrefix(d, "@")); err != nil {
			bad("policy.default_domain", "%v", err)
		}
		cp.defDomain = normLogin(strings.TrimPrefix(d, "@"), "")
	}
	for i, s := range c.AlwaysAllow {
		key := fmt.Sprintf("policy.always_allow[%d]", i)
		t, err := parseTarget(s)
		switch {
		case err != nil && strings.Contains(s, "/"):
			bad(key, "%v", err) // names the network a CIDR with host bits meant
			continue
		case err != nil || t.kind != targetNetwork:
			bad(key, "%q is not an IP address or CIDR", s)
			continue
		}
		cp.allowNets.add(t.net, key)
	}
	for i, s := range c.AlwaysDeny {
		key := fmt.Sprintf("policy.always_deny[%d]", i)
		t, err := parseTarget(s)
		switch {
		case err != nil:
			bad(key, "%v", err)
		case t.kind == targetAny:
			bad(key, `"any" would deny every login`)
		case t.kind == targetNetwork:
			cp.denyNets.add(t.net, key)
		default:
			if _, dup := cp.denyCodes[t.code]; !dup {
				cp.denyCodes[t.code] = key
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return cp, nil
}

func (cp *compiled) addUserFile(uf *UserFile, defDomain string) {
	// Check needs only the warnings; not keeping the entries saves about a
	// third of the memory of a big user file.
	cp.uf = &UserFile{Path: uf.Path, Warnings: uf.Warnings, Printed: uf.Printed}
	for _, e := range uf.Entries {
		k := e.userKey(defDomain)
		cp.users[k] = append(cp.users[k], crule{
			t: e.t, allow: true,
			src:    fmt.Sprintf("%s:%d", uf.Path, e.Line),
			reason: reasonLegacy,
		})
	}
}

func (cp *compiled) addRulesFile(rf *RulesFile, defDomain string) {
	cp.rf = rf
	for _, it := range rf.AlwaysAllow {
		cp.allowNets.add(it.t.net, fmt.Sprintf("%s:%d", rf.Path, it.Line))
	}
	for _, it := range rf.AlwaysDeny {
		src := fmt.Sprintf("%s:%d", rf.Path, it.Line)
		if it.t.kind == targetNetwork {
			cp.denyNets.add(it.t.net, src)
		} else if _, dup := cp.denyCodes[it.t.code]; !dup {
			cp.denyCodes[it.t.code] = src
		}
	}
	for i := range rf.Rules {
		r := &rf.Rules[i]
		src := fmt.Sprintf("%s:%d", rf.Path, r.Line)
		var until int64
		if !r.Until.IsZero() {
			until = r.Until.UnixNano()
		}
		for _, u := range r.Users {
			for _, t := range r.ts {
				c := crule{t: t, allow: r.Allow, protos: r.protos, until: until, src: src}
				switch {
				case u == "*":
					c.reason = reasonFor(2, r.Allow)
					cp.everyone = append(cp.everyone, c)
				case strings.HasPrefix(u, "@"):
					c.reason = reasonFor(1, r.Allow)
					d := normLogin(u[1:], "")
					cp.domains[d] = append(cp.domains[d], c)
				default:
					c.reason = reasonFor(0, r.Allow)
					k := normLogin(u, defDomain)
					cp.users[k] = append(cp.users[k], c)
				}
			}
		}
	}
}

func (cp *compiled) finish() {
	cp.denyNets.finish()
	cp.allowNets.finish()
}

// pick returns the deciding rule of one tier: the first matching deny, else
// the first matching allow, else nil. now is read from clock only when a
// rule with an expiry matches, and then once.
func pick(rs []crule, pb uint8, a netip.Addr, code string, now *int64, clock func() time.Time) *crule {
	var allow *crule
	for i := range rs {
		r := &rs[i]
		if r.protos != 0 && r.protos&pb == 0 && (pb != 0 || r.allow) {
			// Other protocols. For an unknown protocol (pb == 0) a
			// protocol-limited deny still applies: fail closed.
			continue
		}
		if !r.t.match(a, code) {
			continue
		}
		if r.until != 0 {
			if *now == 0 {
				*now = clock().UnixNano()
			}
			if *now >= r.until {
				continue // expired: as if not there
			}
		}
		if !r.allow {
			return r
		}
		if allow == nil {
			allow = r
		}
	}
	return allow
}

func (cp *compiled) decide(login string, pb uint8, a netip.Addr, code string, clock func() time.Time) Decision {
	if code == "" {
		code = "unknown"
	}
	if src, ok := cp.denyCodes[code]; ok {
		return Decision{Rule: src, Reason: reasonAlwaysDeny}
	}
	if src, ok := cp.denyNets.lookup(a); ok {
		return Decision{Rule: src, Reason: reasonAlwaysDeny}
	}
	if src, ok := cp.allowNets.lookup(a); ok {
		return Decision{Allow: true, Rule: src, Reason: reasonAlwaysAllow}
	}
	var now int64
	if len(cp.users) > 0 || len(cp.domains) > 0 {
		var buf [maxLogin]byte
		var urs, drs []crule
		if key, at, ok := lookupKey(&buf, login, cp.defDomain); ok {
			urs = cp.users[string(key)]
			if at >= 0 {
				drs = cp.domains[string(key[at+1:])]
			}
		} else if login != "" {
			l := normLogin(login, cp.defDomain) // rare: overlong
			urs = cp.users[l]
			drs = cp.domains[domainOf(l)]
		}
		if r := pick(urs, pb, a, code, &now, clock); r != nil {
			return Decision{Allow: r.allow, Rule: r.src, Reason: r.reason}
		}
		if r := pick(drs, pb, a, code, &now, clock); r != nil {
			return Decision{Allow: r.allow, Rule: r.src, Reason: r.reason}
		}
	}
	if r := pick(cp.everyone, pb, a, code, &now, clock); r != nil {
		return Decision{Allow: r.allow, Rule: r.src, Reason: r.reason}
	}
	if cp.allowCC[code] {
		return Decision{Allow: true, Rule: ruleDefault, Reason: reasonDefault}
	}
	return Decision{Rule: ruleDefault, Reason: reasonNoRule}
}
