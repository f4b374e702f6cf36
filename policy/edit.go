package policy

// Editing the policy files for `mailgate allow` and `mailgate revoke`.
//
// Implementation notes: the help desk edits files that admins also edit by
// hand and that a running mailgate watches. So an edit (1) takes an
// advisory lock on the file's directory, so two help-desk edits do not
// lose each other's change; (2) refuses a file it cannot parse; (3) changes
// only the lines or rule nodes it must, keeping comments, unrelated lines
// and line endings; (4) parses its own result and checks that it means
// exactly the old policy plus or minus the change; (5) writes a temporary
// file in the same directory, fsyncs it, gives it the old file's mode and
// owner, and renames it over the old one, so mailgate never reads half a
// file. Watch sees the new inode and reloads.

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/mailgate/mailgate/internal/strictyaml"
	"go.yaml.in/yaml/v3"
)

// Change is one help-desk request.
type Change struct {
	// User is a login, "@domain" or "*".
	User string
	// Target is a country code, IP, CIDR, geo label or "any". Empty only
	// with All.
	Target string
	// Protocols limits an allow to these protocols (rules file only).
	Protocols []Protocol
	// Until makes an allow expire (rules file only).
	Until time.Time
	// Note is stored with a rules-file rule (who asked, ticket).
	Note string
	// All, for Revoke, removes every allow of User instead of one Target.
	All bool
}

// EditResult says what an edit did.
type EditResult struct {
	File    string
	Changed bool
	// Detail lines for the operator: what was added or removed, and rules
	// that were left alone because they are shared with other users.
	Detail []string
	// Warnings say when, after an allow, the policy as a whole still
	// denies the user from that place (a deny rule, always_deny).
	Warnings []string
}

// ErrNoFile means the change needs a policy file that is not configured.
var ErrNoFile = errors.New("policy: no file configured for this change")

// Allow adds an allow for ch.User. A plain country code or IP without
// protocols, expiry or note goes to the user file (when configured), in
// its legacy format; anything else goes to the rules file. now is used to
// refuse an expiry in the past and to date the rule's comment.
func Allow(c Config, ch Change, now time.Time) (EditResult, error) {
	res, err := allow(c, ch, now)
	if err == nil {
		res.Warnings = stillDenied(c, ch, now)
	}
	return res, err
}

func allow(c Config, ch Change, now time.Time) (EditResult, error) {
	if err := checkRuleUser(strings.TrimSpace(ch.User)); err != nil {
		return EditResult{}, fmt.Errorf("policy: user: %v: %w", err, ErrInvalid)
	}
	ch.User = strings.TrimSpace(ch.User)
	t, err := parseTarget(ch.Target)
	if err != nil {
		return EditResult{}, fmt.Errorf("policy: %v: %w", err, ErrInvalid)
	}
	if ch.User == "*" && t.kind == targetAny {
		return EditResult{}, fmt.Errorf("policy: allowing every login from anywhere turns the policy off; write that rule by hand if you mean it: %w", ErrInvalid)
	}
	var protos uint8
	for _, p := range ch.Protocols {
		b, err := parseProtocol(string(p))
		if err != nil {
			return EditResult{}, fmt.Errorf("policy: %v: %w", err, ErrInvalid)
		}
		protos |= b
	}
	if !ch.Until.IsZero() && !ch.Until.After(now) {
		return EditResult{}, fmt.Errorf("policy: until %s is not in the future: %w", ch.Until.Format(time.RFC3339), ErrInvalid)
	}
	legacy := protos == 0 && ch.Until.IsZero() && ch.Note == "" &&
		!strings.HasPrefix(ch.User, "@") && ch.User != "*" &&
		((t.kind == targetCode && len(t.code) == 2) || (t.kind == targetNetwork && t.net.IsSingleIP()))
	if legacy && c.UserFile != "" {
		return editUserFile(c.UserFile, c.DefaultDomain, ch.User, t, false, true)
	}
	if c.RulesFile == "" {
		if legacy {
			return EditResult{}, fmt.Errorf("%w: set policy.user_file or policy.rules_file", ErrNoFile)
		}
		return EditResult{}, fmt.Errorf("%w: this allow needs policy.rules_file (the user file only takes user|CC and user|IP)", ErrNoFile)
	}
	r := Rule{Users: []string{ch.User}, Allow: true, Targets: []string{t.String()}, ts: []target{t},
		protos: protos, Protocols: protoNames(protos), Until: ch.Until, Note: ch.Note}
	return allowInRules(c.RulesFile, c.DefaultDomain, r, now)
}

// stillDenied decides the allowed user and place against the whole policy
// after the edit and says which rule, if any, still denies it: the help
// desk must not believe a user is let in when a deny rule wins. For an IP
// or network the address's country is not known here, so country rules
// for it are not considered.
func stillDenied(c Config, ch Change, now time.Time) []string {
	t, err := parseTarget(ch.Target)
	if err != nil || t.kind == targetAny {
		return nil
	}
	cp, err := loadPolicy(&c, slog.New(slog.DiscardHandler))
	if err != nil {
		return []string{fmt.Sprintf("the policy does not load any more: %v", err)}
	}
	addr, code := netip.Addr{}, t.code
	if t.kind == targetNetwork {
		addr, code = t.net.Addr(), "unknown"
	}
	user := strings.TrimSpace(ch.User)
	if user == "*" || strings.HasPrefix(user, "@") {
		user = "someone" + strings.TrimPrefix(user, "*")
	}
	protos := ch.Protocols
	if len(protos) == 0 {
		protos = []Protocol{IMAP, POP3, SMTP}
	}
	at := now
	if !ch.Until.IsZero() {
		at = now.Add(time.Second) // the new rule is live now, not only at until
	}
	var out []string
	for _, p := range protos {
		d := cp.decide(user, protoBit(p), addr, code, func() time.Time { return at })
		if !d.Allow {
			out = append(out, fmt.Sprintf("%s is still denied from %s for %s by %s (%s)", ch.User, t, p, d.Rule, d.Reason))
		}
	}
	return out
}

// Revoke removes allows of ch.User for ch.Target (or all, with ch.All) from
// both files: user-file lines, and rules-file allow rules for that user
// alone. Rules shared with other users are not edited; they are named in
// the result so an admin can edit them by hand. Deny rules are never
// touched.
func Revoke(c Config, ch Change) ([]EditResult, error) {
	ch.User = strings.TrimSpace(ch.User)
	if err := checkRuleUser(ch.User); err != nil {
		return nil, fmt.Errorf("policy: user: %v: %w", err, ErrInvalid)
	}
	var t target
	if !ch.All {
		var err error
		if t, err = parseTarget(ch.Target); err != nil {
			return nil, fmt.Errorf("policy: %v: %w", err, ErrInvalid)
		}
	}
	if c.UserFile == "" && c.RulesFile == "" {
		return nil, fmt.Errorf("%w: set policy.user_file or policy.rules_file", ErrNoFile)
	}
	var out []EditResult
	if c.UserFile != "" && !strings.HasPrefix(ch.User, "@") && ch.User != "*" {
		res, err := editUserFile(c.UserFile, c.DefaultDomain, ch.User, t, ch.All, false)
		if err != nil {
			return out, err
		}
		out = append(out, res)
	}
	if c.RulesFile != "" {
		res, err := revokeInRules(c.RulesFile, c.DefaultDomain, ch.User, t, ch.All)
		if err != nil {
			return out, err
		}
		out = append(out, res)
	}
	return out, nil
}

// ruleUserKey is how a rule's user compares: logins normalised, domains
// and "*" lower-cased as written.
func ruleUserKey(u, defDomain string) string {
	if u == "*" || strings.HasPrefix(u, "@") {
		return normLogin(u, "")
	}
	return normLogin(u, defDomain)
}

// editUserFile adds (add) or removes one user's lines in the legacy file.
func editUserFile(path, defDomain, user string, t target, all, add bool) (EditResult, error) {
	res := EditResult{File: path}
	unlock, err := lockDir(filepath.Dir(path))
	if err != nil {
		return res, err
	}
	defer unlock()
	data, err := readCapped(path)
	if err != nil && !(add && errors.Is(err, os.ErrNotExist)) {
		return res, err
	}
	old, oldWarn := ParseUserFile(data)
	key := normLogin(user, defDomain)
	eol := "\n"
	if bytes.Contains(data, []byte("\r\n")) {
		eol = "\r\n"
	}
	var want []UserEntry // what the new file must contain
	var out []byte
	if add {
		spelled := user
		for _, e := range old {
			if e.userKey(defDomain) == key && e.t == t {
				res.Detail = append(res.Detail, fmt.Sprintf("already allowed by %s:%d", path, e.Line))
				return res, nil
			}
			if e.userKey(defDomain) == key {
				// The old script compares names exactly: keep the
				// spelling the file already uses for this user.
				spelled = e.User
			}
		}
		at, atLine, err := userFileInsertAt(data)
		if err != nil {
			return res, fmt.Errorf("policy: %s: %w", path, err)
		}
		line := spelled + "|" + t.String()
		out = append(out, data[:at]...)
		if len(out) > 0 && out[len(out)-1] != '\n' {
			out = append(out, eol...)
		}
		out = append(out, line+eol...)
		out = append(out, data[at:]...)
		ne := UserEntry{User: spelled, Target: t.String(), t: t}
		i := len(old)
		if atLine > 0 {
			i = slices.IndexFunc(old, func(e UserEntry) bool { return e.Line >= atLine })
			if i < 0 {
				i = len(old)
			}
		}
		want = slices.Insert(slices.Clone(old), i, ne)
		res.Detail = append(res.Detail, fmt.Sprintf("added %q to %s", line, path))
	} else {
		n := 0
		wrapped := phpWrapped(data)
		for raw := range bytes.Lines(data) {
			n++
			line := bytes.TrimSuffix(raw, []byte("\n"))
			if n == 1 {
				line = bytes.TrimPrefix(line, []byte(bom))
			}
			e, skip, err := parseUserLine(line, n, wrapped)
			if err == nil && !skip && e.userKey(defDomain) == key && (all || e.t == t) {
				res.Detail = append(res.Detail, fmt.Sprintf("removed %s:%d %q", path, n, e.User+"|"+e.Target))
				continue
			}
			if err == nil && !skip {
				want = append(want, e)
			}
			out = append(out, raw...)
		}
		if len(res.Detail) == 0 {
			res.Detail = append(res.Detail, fmt.Sprintf("nothing to remove in %s", path))
			return res, nil
		}
	}
	// Parse our own result: same warnings (malformed lines kept as they
	// were) and exactly the intended entries, or nothing is written.
	got, gotWarn := ParseUserFile(out)
	if len(gotWarn) != len(oldWarn) || len(got) != len(want) {
		return res, fmt.Errorf("policy: %s: the edited file would not read back as intended; not written", path)
	}
	for i := range got {
		if got[i].User != want[i].User || got[i].t != want[i].t {
			return res, fmt.Errorf("policy: %s: the edited file would not read back as intended; not written", path)
		}
	}
	if err := writeAtomic(path, out); err != nil {
		return res, err
	}
	res.Changed = true
	return res, nil
}

// errNoBlock refuses an entry that PHP would print.
var errNoBlock = fmt.Errorf("the file is PHP (its first line opens \"<?php\") but has no /* ... */ block before \"?>\" to hold entries, "+
	"and an entry outside such a block would be printed to anyone who requests the file: add a \"/*\" and a \"*/\" line around the entries: %w", ErrInvalid)

// userFileInsertAt says where a new entry goes in the user file data: the
// byte offset to insert at and its 1-based line number (0 for the end of
// the file). In the old project's PHP-wrapped file the entries live inside
// a "/*" ... "*/" comment block so that a web request prints nothing: a
// new entry goes last in the last such block before "?>". A file whose
// first line is a complete guard that stops PHP ("<?php exit; ?>",
// "<?php die(); ?>") or that is not PHP at all takes it at the end.
func userFileInsertAt(data []byte) (at, atLine int, err error) {
	if !phpWrapped(data) {
		return len(data), 0, nil
	}
	off, n := 0, 0
	open, closed := false, false
	first := true
	for raw := range bytes.Lines(data) {
		n++
		line := stripLegacy(bytes.TrimSuffix(raw, []byte("\n")))
		switch {
		case first:
			first = false
			l := strings.ToLower(string(line))
			if strings.Contains(l, "?>") && (strings.Contains(l, "exit") || strings.Contains(l, "die")) {
				return len(data), 0, nil // PHP stops on line 1
			}
			closed = strings.Contains(l, "?>")
		case closed:
		case string(line) == "?>":
			closed = true
		case string(line) == "/*":
			open = true
		case open && string(line) == "*/":
			open = false
			at, atLine = off, n
		}
		off += len(raw)
	}
	if atLine == 0 {
		return 0, 0, errNoBlock
	}
	return at, atLine, nil
}

// lockRulesDoc takes the policy directory's edit lock and loads the rules
// file under it (loadRulesDoc); the caller runs unlock when done. On an
// error the lock is already released.
func lockRulesDoc(path string) (unlock func(), doc *yaml.Node, rf *RulesFile, err error) {
	if unlock, err = lockDir(filepath.Dir(path)); err != nil {
		return nil, nil, nil, err
	}
	if doc, rf, err = loadRulesDoc(path); err != nil {
		unlock()
		return nil, nil, nil, err
	}
	return unlock, doc, rf, nil
}

// loadRulesDoc reads the rules file as both a node tree (to edit, keeping
// comments) and parsed rules (to check). A missing file is an empty one.
func loadRulesDoc(path string) (*yaml.Node, *RulesFile, error) {
	data, err := readCapped(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, nil, err
	}
	rf, err := ParseRules(path, data)
	if err != nil {
		return nil, nil, fmt.Errorf("policy: %s does not parse; fix it first:\n%w", path, err)
	}
	doc, err := strictyaml.ParseDocument(data)
	if err != nil {
		return nil, nil, yamlError(path, err)
	}
	if len(doc.Content) == 0 {
		doc = &yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{{Kind: yaml.MappingNode}}}
	}
	return doc, rf, nil
}

// rulesSeq returns the `rules:` sequence node, creating it if needed.
func rulesSeq(doc *yaml.Node) *yaml.Node {
	top := doc.Content[0]
	for i := 0; i+1 < len(top.Content); i += 2 {
		if top.Content[i].Value == "rules" {
			v := top.Content[i+1]
			if v.Kind != yaml.SequenceNode { // null: "rules:" with nothing
				*v = yaml.Node{Kind: yaml.SequenceNode}
			}
			return v
		}
	}
	seq := &yaml.Node{Kind: yaml.SequenceNode}
	top.Content = append(top.Content, strNode("rules"), seq)
	return seq
}

func allowInRules(path, defDomain string, r Rule, now time.Time) (EditResult, error) {
	res := EditResult{File: path}
	unlock, doc, rf, err := lockRulesDoc(path)
	if err != nil {
		return res, err
	}
	defer unlock()
	key := ruleUserKey(r.Users[0], defDomain)
	for _, o := range rf.Rules {
		if o.Allow && len(o.Users) == 1 && ruleUserKey(o.Users[0], defDomain) == key &&
			slices.Contains(o.ts, r.ts[0]) && o.protos == r.protos && o.Until.Equal(r.Until) {
			res.Detail = append(res.Detail, fmt.Sprintf("already allowed by %s:%d", path, o.Line))
			return res, nil
		}
	}
	n := ruleNode(&r)
	n.HeadComment = "added by mailgate allow, " + now.UTC().Format("2006-01-02 15:04 MST")
	seq := rulesSeq(doc)
	seq.Content = append(seq.Content, n)
	want := *rf
	want.Rules = append(slices.Clone(rf.Rules), r)
	if err := writeRules(path, doc, &want); err != nil {
		return res, err
	}
	res.Changed = true
	res.Detail = append(res.Detail, fmt.Sprintf("added to %s: %s allow %s%s", path, r.Users[0], r.Targets[0], ruleExtras(&r)))
	return res, nil
}

func ruleExtras(r *Rule) string {
	var b strings.Builder
	if len(r.Protocols) > 0 {
		b.WriteString(" protocols " + strings.Join(r.Protocols, ","))
	}
	if !r.Until.IsZero() {
		b.WriteString(" until " + r.Until.Format(time.RFC3339))
	}
	return b.String()
}

func revokeInRules(path, defDomain, user string, t target, all bool) (EditResult, error) {
	res := EditResult{File: path}
	unlock, doc, rf, err := lockRulesDoc(path)
	if err != nil {
		return res, err
	}
	defer unlock()
	key := ruleUserKey(user, defDomain)
	seq := rulesSeq(doc)
	if len(seq.Content) != len(rf.Rules) {
		return res, fmt.Errorf("policy: %s: rules do not line up with the file; not edited", path)
	}
	want := *rf
	want.Rules = nil
	var keepNodes []*yaml.Node
	for i, r := range rf.Rules {
		node := seq.Content[i]
		mine := r.Allow
		shared := false
		for _, u := range r.Users {
			if ruleUserKey(u, defDomain) != key {
				mine = false
				shared = true
			}
		}
		hit := slices.ContainsFunc(r.ts, func(x target) bool { return all || x == t })
		inRule := slices.ContainsFunc(r.Users, func(u string) bool { return ruleUserKey(u, defDomain) == key })
		switch {
		case !r.Allow || !hit || !inRule:
		case shared:
			res.Detail = append(res.Detail, fmt.Sprintf("left alone %s:%d: shared with other users; edit it by hand", path, r.Line))
		case mine && (all || len(r.ts) == 1 || allSame(r.ts, t)):
			res.Detail = append(res.Detail, fmt.Sprintf("removed rule %s:%d", path, r.Line))
			continue
		case mine:
			pruneTargets(node, t)
			r.ts = slices.DeleteFunc(slices.Clone(r.ts), func(x target) bool { return x == t })
			r.Targets = nil
			for _, x := range r.ts {
				r.Targets = append(r.Targets, x.String())
			}
			res.Detail = append(res.Detail, fmt.Sprintf("removed %s from rule %s:%d", t, path, r.Line))
		}
		keepNodes = append(keepNodes, node)
		want.Rules = append(want.Rules, r)
	}
	if !slices.ContainsFunc(res.Detail, func(s string) bool { return strings.HasPrefix(s, "removed") }) {
		res.Detail = append(res.Detail, fmt.Sprintf("nothing to remove in %s", path))
		return res, nil
	}
	seq.Content = keepNodes
	if err := writeRules(path, doc, &want); err != nil {
		return res, err
	}
	res.Changed = true
	return res, nil
}

func allSame(ts []target, t target) bool {
	return !slices.ContainsFunc(ts, func(x target) bool { return x != t })
}

// pruneTargets removes t from the allow list of a rule mapping node.
func pruneTargets(rule *yaml.Node, t target) {
	for i := 0; i+1 < len(rule.Content); i += 2 {
		if rule.Content[i].Value != "allow" {
			continue
		}
		v := rule.Content[i+1]
		if v.Kind == yaml.SequenceNode {
			v.Content = slices.DeleteFunc(v.Content, func(n *yaml.Node) bool {
				x, err := parseTarget(n.Value)
				return err == nil && x == t
			})
		}
	}
}

// writeRules encodes doc, checks it parses to want, and writes it.
func writeRules(path string, doc *yaml.Node, want *RulesFile) error {
	out, err := encodeYAML(doc)
	if err != nil {
		return err
	}
	got, err := ParseRules(path, out)
	if err != nil {
		return fmt.Errorf("policy: %s: the edited file would not parse; not written: %w", path, err)
	}
	if !sameRulesFile(got, want) {
		return fmt.Errorf("policy: %s: the edited file would not read back as intended; not written", path)
	}
	return writeAtomic(path, out)
}

// sameRulesFile compares what two rules files mean, line numbers aside.
func sameRulesFile(a, b *RulesFile) bool {
	items := func(x, y []ListItem) bool {
		return slices.EqualFunc(x, y, func(p, q ListItem) bool { return p.t == q.t })
	}
	return items(a.AlwaysAllow, b.AlwaysAllow) && items(a.AlwaysDeny, b.AlwaysDeny) &&
		slices.EqualFunc(a.Rules, b.Rules, func(x, y Rule) bool {
			return slices.Equal(x.Users, y.Users) && x.Allow == y.Allow && slices.Equal(x.ts, y.ts) &&
				x.protos == y.protos && x.Until.Equal(y.Until) && x.Note == y.Note
		})
}

// writeAtomic replaces path with data: temporary file in the same
// directory, fsync, the old file's mode and owner, rename, fsync of the
// directory. A symlink is followed, so the link stays a link.
func writeAtomic(path string, data []byte) error {
	if p, err := filepath.EvalSymlinks(path); err == nil {
		path = p
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	mode := os.FileMode(0o644) // new files: mailgate may run as another user
	fi, statErr := os.Stat(path)
	if statErr == nil {
		mode = fi.Mode().Perm()
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("policy: %w", err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("policy: writing %s: %w", tmp, err)
	}
	if err := f.Chmod(mode); err != nil {
		return fmt.Errorf("policy: %w", err)
	}
	if statErr == nil {
		chownLike(f, fi) // best effort: only root may give files away
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("policy: syncing %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("policy: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("policy: %w", err)
	}
	ok = true
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // the rename is durable once the directory is synced
		d.Close()
	}
	return nil
}
