package policy

import (
	"fmt"
	"strings"
	"testing"
)

// Anchors, aliases and merge keys (<<) work in the rules file as in any
// YAML an admin writes: a rule can take its places and protocols from an
// earlier one, keys it writes itself winning.
func TestRulesAnchorAliasAndMerge(t *testing.T) {
	in := `always_deny: &blocked [KP, 203.0.113.0/24]
rules:
  - &travel
    users: alice@example.com
    allow: [FR, DE]
    protocols: imap
    note: travel
  - <<: *travel
    users: bob@example.com
  - users: carol@example.com
    deny: *blocked
`
	rf, err := ParseRules("rules.yaml", []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(rf.Rules) != 3 {
		t.Fatalf("rules = %+v", rf.Rules)
	}
	bob := rf.Rules[1]
	if strings.Join(bob.Users, ",") != "bob@example.com" || !bob.Allow ||
		strings.Join(bob.Targets, ",") != "FR,DE" || strings.Join(bob.Protocols, ",") != "imap" || bob.Note != "travel" {
		t.Errorf("merged rule = %+v", bob)
	}
	if carol := rf.Rules[2]; carol.Allow || strings.Join(carol.Targets, ",") != "KP,203.0.113.0/24" {
		t.Errorf("aliased places = %+v", carol)
	}
}

func TestRulesMergeProblems(t *testing.T) {
	in := `rules:
  - &base
    users: a@example.com
    allow: FR
  - <<: *base
    users: b@example.com
    deny: RU
  - <<: FR
    users: c@example.com
  - users: d@example.com
    allow: FR
    allow: DE
`
	_, err := ParseRules("rules.yaml", []byte(in))
	for _, want := range []string{
		"rules.yaml:5: rules[1]: has both allow and deny; write two rules",
		"rules.yaml:8: rules[2].<<: a merge takes a mapping or a list of mappings (like <<: *defaults)",
		"rules.yaml:12: rules[3].allow: written twice (first on line 11)",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v\nwant %q", err, want)
		}
	}
}

// A list named by an alias in every rule is read within a bound set by
// the file's size, not rules × items.
func TestRulesAliasRepetitionBounded(t *testing.T) {
	var b strings.Builder
	b.WriteString("always_deny: &l [")
	for i := range 20000 {
		fmt.Fprintf(&b, "10.%d.%d.0/24, ", i/256, i%256)
	}
	b.WriteString("]\nrules:\n")
	for range 20000 {
		b.WriteString("  - {users: a@example.com, deny: *l}\n")
	}
	_, err := ParseRules("rules.yaml", []byte(b.String()))
	if err == nil || !strings.Contains(err.Error(), "aliases repeat lists too often") {
		t.Fatalf("err = %.300v", err)
	}
}

// `mailgate allow` and `revoke` edit a rules file that uses anchors and
// merges: an edit that keeps the file's meaning is written (the alias
// still resolves), one that would leave an alias without its anchor is
// refused and the file left as it was.
func TestEditRulesWithAnchors(t *testing.T) {
	in := `rules:
  - &travel
    users: alice@example.com
    allow: [FR, DE]
    protocols: imap
  - <<: *travel
    users: bob@example.com
`
	c, _, rules := editSetup(t, "", in)
	c.UserFile = ""
	if _, err := Revoke(c, Change{User: "bob", All: true}); err != nil {
		t.Fatalf("revoke of the merged rule: %v", err)
	}
	rf, err := ParseRules("rules.yaml", []byte(rules()))
	if err != nil || len(rf.Rules) != 1 || rf.Rules[0].Users[0] != "alice@example.com" {
		t.Fatalf("after revoking bob: %v\n%s", err, rules())
	}

	writeFile(t, c.RulesFile, in)
	_, err = Revoke(c, Change{User: "alice", All: true})
	if err == nil || !strings.Contains(err.Error(), "not written") {
		t.Errorf("revoke of the anchored rule = %v, want a refusal", err)
	}
	if rules() != in {
		t.Errorf("refused edit changed the file:\n%s", rules())
	}
}
