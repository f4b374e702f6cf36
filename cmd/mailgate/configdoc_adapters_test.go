package main

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/mailgate/mailgate/adapter/dovecot"
)

// TestDocsExampleAdaptersAreDefaults: the `adapters:` section of the
// complete example in docs/config.md ("every key, with its default")
// shows the code's defaults, so an admin copying it changes nothing. It
// once showed the Dovecot adapter's old lease (30s, not 5s).
func TestDocsExampleAdaptersAreDefaults(t *testing.T) {
	data, err := os.ReadFile("../../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(data), "## A complete example")
	if !ok {
		t.Fatal("docs/config.md: no complete example")
	}
	_, rest, _ = strings.Cut(rest, "```yaml\n")
	block, _, _ := strings.Cut(rest, "```")
	_, section, ok := strings.Cut(block, "\nadapters:")
	if !ok {
		t.Fatal("docs/config.md: the complete example has no adapters: section")
	}
	var doc struct {
		Adapters AdaptersConfig `yaml:"adapters"`
	}
	if err := yaml.Unmarshal([]byte("adapters:"+section), &doc); err != nil {
		t.Fatalf("the example's adapters section: %v", err)
	}
	if got, want := doc.Adapters.Dovecot, (dovecot.Config{}).WithDefaults(); !reflect.DeepEqual(got, want) {
		t.Errorf("docs/config.md example adapters.dovecot = %+v, defaults are %+v", got, want)
	}
	var want AdaptersConfig
	want.Nginx.Verify = "imap" // "" means imap; the example spells it out
	if got := doc.Adapters.Nginx; !reflect.DeepEqual(got, want.Nginx) {
		t.Errorf("docs/config.md example adapters.nginx = %+v, want %+v", got, want.Nginx)
	}
}
