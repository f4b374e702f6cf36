package policy

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestDocsExamples keeps the examples in docs/policy.md copyable: every
// YAML block must load as a rules file or a policy config section.
func TestDocsExamples(t *testing.T) {
	data, err := os.ReadFile("../docs/policy.md")
	if err != nil {
		t.Fatalf("docs/policy.md: %v", err)
	}
	blocks := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(string(data), -1)
	if len(blocks) < 3 {
		t.Fatalf("found %d YAML examples in docs/policy.md, want at least 3", len(blocks))
	}
	for _, b := range blocks {
		text := b[1]
		if strings.HasPrefix(strings.TrimSpace(text), "policy:") {
			var doc struct {
				Policy Config `yaml:"policy"`
			}
			dec := yaml.NewDecoder(strings.NewReader(text))
			dec.KnownFields(true)
			if err := dec.Decode(&doc); err != nil {
				t.Errorf("config example does not decode: %v\n%s", err, text)
				continue
			}
			if err := doc.Policy.Validate(); err != nil {
				t.Errorf("config example does not validate: %v\n%s", err, text)
			}
			continue
		}
		if _, err := ParseRules("docs", []byte(text)); err != nil {
			t.Errorf("rules example does not parse: %v\n%s", err, text)
		}
	}
}
