//go:build integration

package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/integration/mailstack"
)

// TestDovecotAuthReadiness: with verify: dovecot-auth every submission
// login asks Dovecot's auth socket, so /readyz and check-config probe it.
// Against a real Dovecot of the test's own: while its auth service
// listens, mailgate health (GET /readyz) passes and check-config says
// nothing about it, for the unix and the TCP listener; once Dovecot is
// stopped, /readyz answers 503 naming backends.smtp.dovecot_auth and
// check-config warns, for both.
func TestDovecotAuthReadiness(t *testing.T) {
	need(t)
	sdir, err := os.MkdirTemp("/tmp", "mga")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := mailstack.Start(ctx, mailstack.Options{Users: users, Dir: sdir, Name: "mailgate-authready", NoTLS: true, Watchdog: true})
	if st != nil {
		t.Cleanup(st.Stop)
	}
	if err != nil {
		t.Fatalf("Dovecot: %v", err)
	}
	sockets := map[string]string{"unix": st.AuthSocket, "tcp": addr(st.Auth)}

	c := newCfg(t)
	var admin string
	pick := func() {
		c.pickPorts(t)
		p, err := freePorts(1)
		if err != nil {
			t.Fatal(err)
		}
		admin = addr(p[0])
	}
	pick()
	render := func() string {
		c.Verify = "dovecot-auth, dovecot_auth: " + strconv.Quote(st.AuthSocket)
		c.Extra = fmt.Sprintf("admin: {address: %q}", admin)
		return c.YAML()
	}
	m := launchRetrying(t, render, pick)
	if !waitFor(func() bool { return accepting(admin) }, eventually) {
		t.Fatalf("admin listener %s never accepted; log:\n%s", admin, m.Log())
	}
	// checkConfig runs check-config on the config with dovecot_auth set
	// to socket and returns what it printed.
	checkConfig := func(socket string) string {
		t.Helper()
		c.Verify = "dovecot-auth, dovecot_auth: " + strconv.Quote(socket)
		c.Extra = "admin: {address: off}"
		path := filepath.Join(t.TempDir(), "check.yaml")
		if err := os.WriteFile(path, []byte(c.YAML()), 0o600); err != nil {
			t.Fatal(err)
		}
		return runMailgate(t, 0, "check-config", "-config", path)
	}
	health := func() (int, string) {
		t.Helper()
		out, err := exec.Command(need(t).mailgateBin, "health", "-url", "http://"+admin+"/readyz").CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out)
		} else if err != nil {
			t.Fatal(err)
		}
		return 0, string(out)
	}

	if code, out := health(); code != 0 {
		t.Fatalf("auth service up: mailgate health exit %d\n%s", code, out)
	}
	for name, s := range sockets {
		if out := checkConfig(s); strings.Contains(out, "dovecot_auth") {
			t.Errorf("auth service up (%s): check-config warns:\n%s", name, out)
		}
	}

	st.Stop()
	// /readyz caches its answer for a few seconds (admin.ReadyCacheTTL).
	var code int
	var out string
	if !waitFor(func() bool { code, out = health(); return code != 0 }, eventually) {
		t.Fatalf("Dovecot stopped, yet /readyz stays ready:\n%s", out)
	}
	if !strings.Contains(out, "backends.smtp.dovecot_auth") || !strings.Contains(out, st.AuthSocket) {
		t.Errorf("not-ready answer does not name the auth socket:\n%s", out)
	}
	for name, s := range sockets {
		if out := checkConfig(s); !strings.Contains(out, "warning: backends.smtp.dovecot_auth: Dovecot's auth socket "+s+" does not answer") {
			t.Errorf("auth service down (%s): check-config does not warn:\n%s", name, out)
		}
	}
}
