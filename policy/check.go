package policy

// policy check: what an admin should look at before trusting the files.

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Finding kinds, in the order an admin should care about them.
const (
	FindNeverMatches = "never-matches" // the rule can never decide anything
	FindHidden       = "hidden"        // another rule always decides first
	FindExpired      = "expired"       // until is in the past
	FindSkippedLine  = "skipped-line"  // a user-file line that was ignored
	FindUnknownLabel = "unknown-label" // a label geo never gives by itself
	FindPHPPrints    = "php-prints"    // a user-file entry PHP shows to anyone
)

// Finding is one remark of Check about the loaded policy.
type Finding struct {
	Kind string
	// Where is "file:line" or a config key path.
	Where string
	Msg   string
}

func (f Finding) String() string { return fmt.Sprintf("%s: %s: %s", f.Where, f.Kind, f.Msg) }

// Check lists expired rules, rules that can never match, rules hidden by
// others, skipped user-file lines, user-file entries PHP would print, and
// labels that only a geo override could
// produce, sorted by file and line. It looks at the policy in use.
func (e *Engine) Check() []Finding {
	return e.cur.Load().check(e.now().UnixNano())
}

func (cp *compiled) check(now int64) []Finding {
	var out []Finding
	add := func(kind, where, format string, args ...any) {
		out = append(out, Finding{Kind: kind, Where: where, Msg: fmt.Sprintf(format, args...)})
	}
	if cp.uf != nil {
		for _, w := range cp.uf.Warnings {
			add(FindSkippedLine, fmt.Sprintf("%s:%d", cp.uf.Path, w.Line), "%s", w.Msg)
		}
		for _, n := range cp.uf.Printed {
			add(FindPHPPrints, fmt.Sprintf("%s:%d", cp.uf.Path, n),
				"after the PHP wrapper's \"?>\": PHP prints this entry to anyone who requests the file; move it inside the /* ... */ block")
		}
	}
	if cp.rf != nil {
		for i := range cp.rf.Rules {
			r := &cp.rf.Rules[i]
			where := fmt.Sprintf("%s:%d", cp.rf.Path, r.Line)
			if !r.Until.IsZero() && r.Until.UnixNano() <= now {
				add(FindExpired, where, "expired %s (%s %s for %s); remove it",
					r.Until.Format("2006-01-02 15:04 MST"), verb(r.Allow), strings.Join(r.Targets, ", "), strings.Join(r.Users, ", "))
			}
			for _, t := range r.ts {
				if t.kind == targetCode && len(t.code) > 2 && !builtinLabels[t.code] {
					add(FindUnknownLabel, where, "%q is not a label geo gives by itself; it matches only addresses a geo override labels so", t.code)
				}
			}
		}
	}
	for i, s := range cp.cfg.AllowCountries {
		if t, err := parseTarget(s); err == nil && t.kind == targetCode && len(t.code) > 2 && !builtinLabels[t.code] {
			add(FindUnknownLabel, fmt.Sprintf("policy.allow_countries[%d]", i), "%q is not a label geo gives by itself; it matches only addresses a geo override labels so", t.code)
		}
	}
	for code, src := range cp.denyCodes {
		if len(code) > 2 && !builtinLabels[code] {
			add(FindUnknownLabel, src, "%q is not a label geo gives by itself; it matches only addresses a geo override labels so", code)
		}
	}
	cp.checkAlways(add)
	sets := [][]crule{cp.everyone}
	for _, k := range slices.Sorted(maps.Keys(cp.users)) {
		sets = append(sets, cp.users[k])
	}
	for _, k := range slices.Sorted(maps.Keys(cp.domains)) {
		sets = append(sets, cp.domains[k])
	}
	for _, rs := range sets {
		checkSet(rs, now, add)
	}
	// A total order: the maps walked above have no order of their own, and
	// Compact only drops adjacent repeats.
	slices.SortFunc(out, func(a, b Finding) int {
		fa, la := splitWhere(a.Where)
		fb, lb := splitWhere(b.Where)
		return cmp.Or(cmp.Compare(fa, fb), cmp.Compare(la, lb), cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Msg, b.Msg))
	})
	return slices.Compact(out)
}

func verb(allow bool) string {
	if allow {
		return "allow"
	}
	return "deny"
}

func splitWhere(w string) (string, int) {
	if i := strings.LastIndexByte(w, ':'); i >= 0 {
		if n, err := strconv.Atoi(w[i+1:]); err == nil {
			return w[:i], n
		}
	}
	return w, 0
}

// checkAlways finds rules that always_deny or always_allow pre-empt.
func (cp *compiled) checkAlways(add func(kind, where, format string, args ...any)) {
	visit := func(rs []crule) {
		for _, r := range rs {
			if src, ok := cp.deniedAlways(r.t); ok {
				if r.allow {
					add(FindNeverMatches, r.src, "allows %s, but %s always denies it", r.t, src)
				} else {
					add(FindHidden, r.src, "denies %s, which %s always denies anyway", r.t, src)
				}
				continue
			}
			if src, ok := cp.allowedAlways(r.t); ok {
				if r.allow {
					add(FindHidden, r.src, "allows %s, which %s always allows anyway", r.t, src)
				} else {
					add(FindNeverMatches, r.src, "denies %s, but %s always allows it first", r.t, src)
				}
			}
		}
	}
	visit(cp.everyone)
	for _, rs := range cp.users {
		visit(rs)
	}
	for _, rs := range cp.domains {
		visit(rs)
	}
}

// deniedAlways reports whether always_deny covers every address of t.
func (cp *compiled) deniedAlways(t target) (string, bool) {
	switch t.kind {
	case targetCode:
		src, ok := cp.denyCodes[t.code]
		return src, ok
	case targetNetwork:
		return cp.denyNets.covers(t.net)
	}
	return "", false
}

func (cp *compiled) allowedAlways(t target) (string, bool) {
	if t.kind == targetNetwork {
		return cp.allowNets.covers(t.net)
	}
	return "", false
}

// covers reports whether one network of the table contains all of p.
func (t *prefixTable) covers(p netip.Prefix) (string, bool) {
	lens := t.lens6
	if p.Addr().Is4() {
		lens = t.lens4
	}
	for _, b := range lens {
		if b > p.Bits() {
			continue
		}
		q, err := p.Addr().Prefix(b)
		if err != nil {
			continue
		}
		if src, ok := t.m[q]; ok {
			return src, true
		}
	}
	return "", false
}

// checkSet finds, among the rules of one login, domain or everyone, those
// another rule of the same set always beats: an allow under a deny that
// covers its place, protocols and time, or a repeat of an earlier rule.
func checkSet(rs []crule, now int64, add func(kind, where, format string, args ...any)) {
	live := func(r *crule) bool { return r.until == 0 || r.until > now }
	for i := range rs {
		a := &rs[i]
		if !live(a) {
			continue
		}
		for j := range rs {
			b := &rs[j]
			if i == j || !live(b) || !a.t.coveredBy(b.t) || !protosCover(b.protos, a.protos) ||
				!(b.until == 0 || (a.until != 0 && b.until >= a.until)) {
				continue
			}
			switch {
			case a.allow && !b.allow:
				add(FindHidden, a.src, "allows %s, but %s denies it for the same users", a.t, b.src)
			case a.allow == b.allow && (j < i || !b.t.coveredBy(a.t)) && a.src != b.src:
				add(FindHidden, a.src, "%s %s repeats %s", verb(a.allow), a.t, b.src)
			default:
				continue
			}
			break
		}
	}
}

// protosCover reports whether a rule limited to outer applies whenever one
// limited to inner does (0 means every protocol).
func protosCover(outer, inner uint8) bool {
	return outer == 0 || (inner != 0 && inner&^outer == 0)
}
