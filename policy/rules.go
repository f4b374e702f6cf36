package policy

// The YAML rules file: what the legacy user file cannot say. Decoding is
// strict (unknown keys are errors) and walks yaml.v3 nodes by hand so that
// every error names file:line and the key path, and every problem in the
// file is reported at once. Parsing, aliases and merge keys (<<) are
// internal/strictyaml's, shared with the config file.

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mailgate/mailgate/internal/strictyaml"
	"go.yaml.in/yaml/v3"
)

// Error is a problem in a policy file or in the policy config section.
// It unwraps to ErrInvalid.
type Error struct {
	File string // empty for a config key
	Line int
	Key  string // key path, e.g. "rules[2].allow[0]" or "policy.always_deny[1]"
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		fmt.Fprintf(&b, "%s:%d: ", e.File, e.Line)
	}
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

func (e *Error) Unwrap() error { return ErrInvalid }

// Rule is one entry of the rules file's `rules:` list.
type Rule struct {
	// Users are logins, "@domain" or "*" (everyone), as written.
	Users []string
	// Allow is true for `allow:`, false for `deny:`.
	Allow bool
	// Targets are the places, normalised ("FR", "10.0.0.0/8", "private").
	Targets []string
	// Protocols limits the rule to these protocols; empty means all.
	Protocols []string
	// Until is when the rule stops applying; zero means never.
	Until time.Time
	// Note is free text for admins (who asked, ticket number).
	Note string
	// Line is where the rule starts.
	Line int

	ts     []target
	protos uint8
}

// ListItem is one entry of always_allow or always_deny.
type ListItem struct {
	Value string
	Line  int
	t     target
}

// RulesFile is a parsed rules file.
type RulesFile struct {
	Path        string
	AlwaysAllow []ListItem
	AlwaysDeny  []ListItem
	Rules       []Rule
}

// ParseRules parses rules-file content; name is used in errors. All
// problems are returned at once, joined, each an *Error.
func ParseRules(name string, data []byte) (rf *RulesFile, err error) {
	rf = &RulesFile{Path: name}
	root, err := strictyaml.Parse(data)
	if err != nil {
		return nil, yamlError(name, err)
	}
	if root == nil {
		return rf, nil // empty or only comments: no rules
	}
	// Aliases and merge keys may name one list or mapping many times;
	// the work is bounded by the file's size (see strictyaml.Limit).
	p := &rulesParser{file: name, rf: rf, limit: strictyaml.Limit(2*len(data) + 100_000)}
	p.top(root)
	if n := len(p.errs); n > maxFileErrors {
		p.errs = append(p.errs[:maxFileErrors], &Error{File: name, Line: 1,
			Msg: fmt.Sprintf("%d more errors not shown; is this a rules file?", n-maxFileErrors)})
	}
	if len(p.errs) > 0 {
		return nil, errors.Join(p.errs...)
	}
	return rf, nil
}

// maxFileErrors caps the errors listed for one file: enough to fix a real
// file in one go, without flooding the log when a wrong file is named.
const maxFileErrors = 100

// yamlError turns a syntax error from strictyaml.Parse into an *Error
// naming file:line.
func yamlError(file string, err error) error {
	var se *strictyaml.SyntaxError
	if errors.As(err, &se) {
		return &Error{File: file, Line: max(se.Line, 1), Msg: se.Msg}
	}
	return &Error{File: file, Line: 1, Msg: err.Error()}
}

type rulesParser struct {
	file  string
	rf    *RulesFile
	errs  []error
	limit strictyaml.Limit // keys and list items left to read
}

func (p *rulesParser) errf(n *yaml.Node, key, format string, args ...any) {
	p.errs = append(p.errs, &Error{File: p.file, Line: n.Line, Key: key, Msg: fmt.Sprintf(format, args...)})
}

// pairs is strictyaml.Pairs (merge keys expanded, keys written twice
// refused) with its problems reported under key.
func (p *rulesParser) pairs(n *yaml.Node, key string) []strictyaml.Pair {
	ps, errs := p.limit.Pairs(n)
	for _, e := range errs {
		p.errs = append(p.errs, &Error{File: p.file, Line: e.Line, Key: strictyaml.Join(key, e.Path), Msg: e.Msg})
	}
	return ps
}

func (p *rulesParser) top(n *yaml.Node) {
	n = strictyaml.Resolve(n)
	if n.Kind != yaml.MappingNode {
		p.errf(n, "", "expected a mapping with always_allow, always_deny and rules")
		return
	}
	for _, kv := range p.pairs(n, "") {
		k, v := kv.Key, strictyaml.Resolve(kv.Value)
		switch k.Value {
		case "always_allow":
			p.rf.AlwaysAllow = p.list(v, k.Value, false)
		case "always_deny":
			p.rf.AlwaysDeny = p.list(v, k.Value, true)
		case "rules":
			p.rules(v)
		default:
			p.errf(k, k.Value, "unknown key (want always_allow, always_deny or rules)")
		}
	}
}

// scalars reads a list of strings, or a single string as a list of one.
func (p *rulesParser) scalars(n *yaml.Node, key string) []*yaml.Node {
	n = strictyaml.Resolve(n)
	switch {
	case n.Kind == yaml.ScalarNode && n.Tag == "!!null":
		return nil
	case n.Kind == yaml.ScalarNode:
		return []*yaml.Node{n}
	case n.Kind == yaml.SequenceNode:
		if !p.limit.Spend(len(n.Content)) {
			p.errf(n, key, "aliases repeat lists too often")
			return nil
		}
		out := make([]*yaml.Node, 0, len(n.Content))
		for i, c := range n.Content {
			c = strictyaml.Resolve(c)
			if c.Kind != yaml.ScalarNode {
				p.errf(c, fmt.Sprintf("%s[%d]", key, i), "expected a single value")
				continue
			}
			out = append(out, c)
		}
		return out
	}
	p.errf(n, key, "expected a value or a list of values")
	return nil
}

// list reads always_allow (networks only) or always_deny (networks,
// countries, labels).
func (p *rulesParser) list(n *yaml.Node, key string, codes bool) []ListItem {
	var out []ListItem
	for i, c := range p.scalars(n, key) {
		k := fmt.Sprintf("%s[%d]", key, i)
		t, err := parseTarget(c.Value)
		switch {
		case err != nil:
			p.errf(c, k, "%v", err)
			continue
		case t.kind == targetAny:
			p.errf(c, k, `"any" is not allowed here`)
			continue
		case !codes && t.kind != targetNetwork:
			p.errf(c, k, "%q: always_allow takes IP addresses and CIDRs only", c.Value)
			continue
		}
		out = append(out, ListItem{Value: t.String(), Line: c.Line, t: t})
	}
	return out
}

func (p *rulesParser) rules(n *yaml.Node) {
	n = strictyaml.Resolve(n)
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return
	}
	if n.Kind != yaml.SequenceNode {
		p.errf(n, "rules", "expected a list of rules")
		return
	}
	for i, c := range n.Content {
		if r, ok := p.rule(c, fmt.Sprintf("rules[%d]", i)); ok {
			p.rf.Rules = append(p.rf.Rules, r)
		}
	}
}

func (p *rulesParser) rule(n *yaml.Node, key string) (Rule, bool) {
	n = strictyaml.Resolve(n)
	r := Rule{Line: n.Line}
	if n.Kind != yaml.MappingNode {
		p.errf(n, key, "expected a mapping with users and allow or deny")
		return r, false
	}
	before := len(p.errs)
	var haveUsers, haveAllow, haveDeny bool
	for _, kv := range p.pairs(n, key) {
		k, v := kv.Key, strictyaml.Resolve(kv.Value)
		kk := key + "." + k.Value
		switch k.Value {
		case "users", "user":
			haveUsers = true
			for j, u := range p.scalars(v, kk) {
				if err := checkRuleUser(u.Value); err != nil {
					p.errf(u, fmt.Sprintf("%s[%d]", kk, j), "%v", err)
					continue
				}
				r.Users = append(r.Users, u.Value)
			}
		case "allow", "deny":
			if k.Value == "allow" {
				haveAllow = true
			} else {
				haveDeny = true
			}
			r.Allow = k.Value == "allow"
			for j, t := range p.scalars(v, kk) {
				tt, err := parseTarget(t.Value)
				if err != nil {
					p.errf(t, fmt.Sprintf("%s[%d]", kk, j), "%v", err)
					continue
				}
				r.ts = append(r.ts, tt)
				r.Targets = append(r.Targets, tt.String())
			}
		case "protocols", "protocol":
			for j, pn := range p.scalars(v, kk) {
				b, err := parseProtocol(pn.Value)
				if err != nil {
					p.errf(pn, fmt.Sprintf("%s[%d]", kk, j), "%v", err)
					continue
				}
				r.protos |= b
			}
			r.Protocols = protoNames(r.protos)
		case "until":
			if v.Kind != yaml.ScalarNode {
				p.errf(v, kk, "expected a date or date and time")
				continue
			}
			t, err := ParseUntil(v.Value)
			if err != nil {
				p.errf(v, kk, "%v", err)
				continue
			}
			r.Until = t
		case "note", "comment":
			if v.Kind != yaml.ScalarNode {
				p.errf(v, kk, "expected text")
				continue
			}
			r.Note = v.Value
		default:
			p.errf(k, kk, "unknown key (want users, allow or deny, protocols, until, note)")
		}
	}
	switch {
	case !haveUsers:
		p.errf(n, key, "no users (a login, @domain or *)")
	case haveAllow && haveDeny:
		p.errf(n, key, "has both allow and deny; write two rules")
	case !haveAllow && !haveDeny:
		p.errf(n, key, "needs allow or deny")
	}
	if len(p.errs) == before && (len(r.Users) == 0 || len(r.ts) == 0) {
		p.errf(n, key, "empty users or places: the rule would never match")
	}
	return r, len(p.errs) == before
}

// checkRuleUser accepts a login, "@domain" or "*".
func checkRuleUser(u string) error {
	switch {
	case u == "*":
		return nil
	case strings.HasPrefix(u, "@"):
		return checkDomain(u[1:])
	}
	if err := checkLogin(u); err != nil {
		return err
	}
	if i := strings.LastIndexByte(u, '@'); i >= 0 && i == len(u)-1 {
		return fmt.Errorf("%q ends with \"@\"", u)
	}
	return nil
}

// untilLayouts are the spellings `until` accepts; without a UTC offset the
// time is in the local time zone of the host.
var untilLayouts = []string{
	time.RFC3339,
	"2006-01-02T15:04:05",
	"2006-01-02T15:04",
	"2006-01-02 15:04:05",
	"2006-01-02 15:04",
}

// ParseUntil reads an expiry: RFC 3339 ("2026-12-10T18:00:00+01:00"), a
// local date and time ("2026-12-10 18:00"), or a date alone, which means
// the rule applies through that whole day (local time).
func ParseUntil(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	for _, l := range untilLayouts {
		if t, err := time.ParseInLocation(l, s, time.Local); err == nil {
			return t, nil
		}
	}
	if d, err := time.ParseInLocation("2006-01-02", s, time.Local); err == nil {
		return d.AddDate(0, 0, 1), nil
	}
	return time.Time{}, fmt.Errorf("%q is not a date (2026-12-10) or date and time (2026-12-10T18:00:00+01:00)", s)
}

// FormatRules writes rf as a rules file that ParseRules reads back to the
// same rules and lists (line numbers aside).
func FormatRules(rf *RulesFile) ([]byte, error) {
	top := &yaml.Node{Kind: yaml.MappingNode}
	if len(rf.AlwaysAllow) > 0 {
		top.Content = append(top.Content, strNode("always_allow"), itemsNode(rf.AlwaysAllow))
	}
	if len(rf.AlwaysDeny) > 0 {
		top.Content = append(top.Content, strNode("always_deny"), itemsNode(rf.AlwaysDeny))
	}
	seq := &yaml.Node{Kind: yaml.SequenceNode}
	for i := range rf.Rules {
		seq.Content = append(seq.Content, ruleNode(&rf.Rules[i]))
	}
	top.Content = append(top.Content, strNode("rules"), seq)
	return encodeYAML(&yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{top}})
}

func encodeYAML(doc *yaml.Node) ([]byte, error) {
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, fmt.Errorf("policy: writing YAML: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("policy: writing YAML: %w", err)
	}
	return b.Bytes(), nil
}

// strNode is a string scalar; the encoder quotes it when needed so that
// "NO" or "2026-12-10" stay strings.
func strNode(s string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s}
}

func flowList(vals []string) *yaml.Node {
	n := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
	for _, v := range vals {
		n.Content = append(n.Content, strNode(v))
	}
	return n
}

func itemsNode(items []ListItem) *yaml.Node {
	n := &yaml.Node{Kind: yaml.SequenceNode}
	for _, it := range items {
		n.Content = append(n.Content, strNode(it.Value))
	}
	return n
}

func ruleNode(r *Rule) *yaml.Node {
	n := &yaml.Node{Kind: yaml.MappingNode}
	n.Content = append(n.Content, strNode("users"), flowList(r.Users))
	verb := "deny"
	if r.Allow {
		verb = "allow"
	}
	n.Content = append(n.Content, strNode(verb), flowList(r.Targets))
	if len(r.Protocols) > 0 {
		n.Content = append(n.Content, strNode("protocols"), flowList(r.Protocols))
	}
	if !r.Until.IsZero() {
		n.Content = append(n.Content, strNode("until"), strNode(r.Until.Format(time.RFC3339Nano)))
	}
	if r.Note != "" {
		n.Content = append(n.Content, strNode("note"), strNode(r.Note))
	}
	return n
}

// readRulesFile reads and parses the rules file at path.
func readRulesFile(path string) (*RulesFile, error) {
	data, err := readCapped(path)
	if err != nil {
		return nil, err
	}
	return ParseRules(path, data)
}
