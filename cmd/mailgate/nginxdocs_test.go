package main

import (
	"regexp"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/adapter/nginx"
)

// TestNginxAdapterDocsAgree: docs/nginx-adapter.md's mailgate YAML is a
// valid config fragment whose adapters.nginx.listen is the address its nginx
// block's auth_http names, and the nginx block sends the secret in the
// header the adapter reads. (integration/nginx_adapter_test.go gives that
// nginx block, verbatim but for ports, paths and the secret, to the real
// nginx.)
func TestNginxAdapterDocsAgree(t *testing.T) {
	page := readRepo(t, "docs/nginx-adapter.md")
	y := regexp.MustCompile("(?s)```yaml\n(adapters:.*?)```").FindStringSubmatch(page)
	if y == nil {
		t.Fatal("docs/nginx-adapter.md has no yaml block starting with adapters:")
	}
	// A fragment: decoded strictly, then the adapter's own checks,
	// which include the backends nginx is sent to.
	c, err := decodeOnly([]byte(y[1]))
	if err == nil {
		c.applyDefaults()
		err = c.validateNginxAdapter()
	}
	if err != nil {
		t.Fatalf("the page's config does not load: %v\n%s", err, y[1])
	}
	n := c.Adapters.Nginx
	if !n.Enabled() || n.SecretFile == "" {
		t.Fatalf("the page's config leaves the adapter off: %+v", n)
	}
	block := regexp.MustCompile("(?s)```nginx\n(mail \\{.*?\n\\})\n```").FindStringSubmatch(page)
	if block == nil {
		t.Fatal("docs/nginx-adapter.md has no ```nginx mail {} block")
	}
	if want := "auth_http " + n.Listen + "/auth;"; !strings.Contains(block[1], want) {
		t.Errorf("the nginx block does not say %q", want)
	}
	if want := "auth_http_header " + nginx.SecretHeader + ` "`; !strings.Contains(block[1], want) {
		t.Errorf("the nginx block does not send the secret as %q", want)
	}
	if !strings.Contains(page, "`"+n.SecretFile) && !strings.Contains(page, "> "+n.SecretFile) {
		t.Errorf("the page never shows how to create %s", n.SecretFile)
	}
	for _, d := range []string{"imap_auth plain login;", "pop3_auth plain;", "smtp_auth login plain;", "xclient on;"} {
		if !strings.Contains(block[1], d) {
			t.Errorf("the nginx block lost %q", d)
		}
	}
}
