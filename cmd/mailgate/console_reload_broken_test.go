package main

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/mailgate/mailgate/cmd/mailgate/internal/admin"
	"github.com/mailgate/mailgate/console"
)

// TestConsoleBrokenUsersFileKeepsSessionsOnReload: a reload that finds
// the console's users file unreadable (here: being rewritten, empty of
// its accounts and with a broken line) keeps the open console sessions
// and counts as a failed reload, even when the config loads.
func TestConsoleBrokenUsersFileKeepsSessionsOnReload(t *testing.T) {
	e := startOpsEnv(t)
	file := filepath.Join(t.TempDir(), "console.users")
	if _, _, err := setConsoleUser(file, "ops", console.RoleAdmin, mustHash(t, "console-password")); err != nil {
		t.Fatal(err)
	}
	cs := newConsole(e.g, ConsoleConfig{UsersFile: file})
	load := func() (*Config, error) { return e.cfg, nil }
	srv := httptest.NewServer(newAdminServer(e.g, testAdminToken, load, func(c *admin.Config) { c.Console = cs.Handler() }).Handler())
	defer srv.Close()

	jar, _ := cookiejar.New(nil)
	cl := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	r, err := cl.PostForm(srv.URL+"/console/login", url.Values{"user": {"ops"}, "password": {"console-password"}})
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-in: %d", r.StatusCode)
	}

	if err := os.WriteFile(file, []byte("ops:adm"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Request(t.Context(), srv.URL, testAdminToken, "POST", "/reload", nil); err == nil {
		t.Error("POST /reload with a broken console users file: no error")
	}
	_, body := e.get(t, "/metrics")
	wantSeries(t, body, `mailgate_config_reloads_total{result="failure"}`, "1")
	wantSeries(t, body, "mailgate_config_last_reload_successful", "0")

	r, err = cl.Get(srv.URL + "/console/bans")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if r.StatusCode != http.StatusOK {
		t.Errorf("console page after the broken reload: %d, want 200 (session kept)\n%s", r.StatusCode, b)
	}
}
