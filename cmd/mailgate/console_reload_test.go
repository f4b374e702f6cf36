package main

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/cmd/mailgate/internal/admin"
	"github.com/mailgate/mailgate/console"
)

// TestConsoleRolesApplyOnReload: an admin demoted to viewer in the users
// file can change nothing once mailgate reloads (POST /reload), and a
// removed account's session is over, without a restart.
func TestConsoleRolesApplyOnReload(t *testing.T) {
	e := startOpsEnv(t)
	file := filepath.Join(t.TempDir(), "console.users")
	h := mustHash(t, "console-password")
	for _, u := range []string{"ops", "gone"} {
		if _, _, err := setConsoleUser(file, u, console.RoleAdmin, h); err != nil {
			t.Fatal(err)
		}
	}
	cs := newConsole(e.g, ConsoleConfig{UsersFile: file})
	load := func() (*Config, error) { return e.cfg, nil }
	srv := httptest.NewServer(newAdminServer(e.g, testAdminToken, load, func(c *admin.Config) { c.Console = cs.Handler() }).Handler())
	defer srv.Close()

	signIn := func(user string) (*http.Client, string) {
		jar, _ := cookiejar.New(nil)
		cl := &http.Client{Jar: jar}
		r, err := cl.PostForm(srv.URL+"/console/login", url.Values{"user": {user}, "password": {"console-password"}})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		tok := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindSubmatch(b)
		if tok == nil {
			t.Fatalf("sign-in of %s:\n%s", user, b)
		}
		return cl, string(tok[1])
	}
	ops, tok := signIn("ops")
	gone, _ := signIn("gone")

	// Demote ops, remove gone, reload.
	if _, _, err := setConsoleUser(file, "ops", console.RoleViewer, h); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var keep []string
	for _, l := range strings.Split(string(data), "\n") {
		if !strings.HasPrefix(l, "gone:") {
			keep = append(keep, l)
		}
	}
	if err := os.WriteFile(file, []byte(strings.Join(keep, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Request(t.Context(), srv.URL, testAdminToken, "POST", "/reload", nil); err != nil {
		t.Fatalf("POST /reload: %v", err)
	}

	r, err := ops.PostForm(srv.URL+"/console/bans/add", url.Values{"csrf": {tok}, "prefix": {"192.0.2.0/24"}, "duration": {"1h"}})
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusForbidden || len(e.g.guard.g.Bans()) != 0 {
		t.Errorf("demoted admin's ban after the reload: %d, bans %v; want 403 and none", r.StatusCode, e.g.guard.g.Bans())
	}
	gone.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	r, err = gone.Get(srv.URL + "/console/bans")
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusSeeOther {
		t.Errorf("removed account's page after the reload: %d, want a redirect to sign in", r.StatusCode)
	}
}
