package main

import (
	"slices"
	"strings"
	"testing"
)

// Anchors, aliases and merge keys (<<) work in the config as YAML
// admins expect (docs/config.md): listeners share their settings with
// one anchor, a key written next to the merge wins.
func TestParseConfigAnchorAliasAndMerge(t *testing.T) {
	in := `tls: {self_signed: true}
listeners:
  - &imaps
    name: imaps
    protocol: imap
    address: "127.0.0.1:993"
    tls: implicit
    proxy_protocol_from: &lb [127.0.0.5/32]
  - <<: *imaps
    name: imap
    address: "127.0.0.1:143"
    tls: starttls
  - {name: pop3s, protocol: pop3, address: "127.0.0.1:995", tls: implicit, proxy_protocol_from: *lb}
`
	cfg, err := parseConfig([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Listeners) != 3 {
		t.Fatalf("listeners = %+v", cfg.Listeners)
	}
	imap := cfg.Listeners[1]
	if imap.Name != "imap" || imap.Protocol != "imap" || imap.Address != "127.0.0.1:143" || imap.TLS != "starttls" ||
		!slices.Equal(imap.ProxyFrom, []string{"127.0.0.5/32"}) {
		t.Errorf("merged listener = %+v", imap)
	}
	if !slices.Equal(cfg.Listeners[2].ProxyFrom, []string{"127.0.0.5/32"}) {
		t.Errorf("aliased list = %v", cfg.Listeners[2].ProxyFrom)
	}

	// A key that comes in by a merge is checked like any other, on the
	// line where it is written.
	_, err = parseConfig([]byte("tls: {self_signed: true}\nlisteners:\n  - &a {name: a, protocol: imap, address: ':993', tls: implicit, adress: x}\n  - {<<: *a, name: b}\n  - {<<: [a, b], name: c}\n"))
	for _, want := range []string{
		"listeners[0].adress: unknown key (line 3)",
		"listeners[1].adress: unknown key (line 3)",
		"listeners[2].<<: a merge takes a mapping or a list of mappings (like <<: *defaults) (line 5)",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v\nwant %q", err, want)
		}
	}
}
