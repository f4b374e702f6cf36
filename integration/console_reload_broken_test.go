//go:build integration

package integration

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestConsoleBrokenUsersFileKeepsSessionsOnSIGHUP: with the real binary,
// a users file caught half written at SIGHUP signs nobody out: the open
// admin session keeps working and mailgate logs the ERROR.
func TestConsoleBrokenUsersFileKeepsSessionsOnSIGHUP(t *testing.T) {
	need(t)
	m, base, _ := consoleMailgate(t)
	cfg, err := os.ReadFile(m.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	um := regexp.MustCompile(`users_file: "([^"]+)"`).FindSubmatch(cfg)
	if um == nil {
		t.Fatalf("no users_file in the config:\n%s", cfg)
	}
	users := string(um[1])

	jar, _ := cookiejar.New(nil)
	cl := &http.Client{Jar: jar, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	r, err := cl.PostForm(base+"/console/login", url.Values{"user": {consoleAdmin}, "password": {consoleAdminPW}})
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-in: %d", r.StatusCode)
	}

	data, err := os.ReadFile(users)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(users, data[:len(data)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	if err := m.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	// The console logs a users file it cannot read at every reload.
	if !waitFor(func() bool { return hasLine(m.Log(), "level=ERROR", "console: users file unreadable on reload") }, eventually) {
		t.Fatalf("no ERROR line for the broken users file after SIGHUP:\n%s", m.Log())
	}
	if !hasLine(m.Log(), "console: users file unreadable on reload; console sessions and accounts kept") {
		t.Errorf("the ERROR line does not say the sessions were kept:\n%s", m.Log())
	}
	r, err = cl.Get(base + "/console/bans")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if r.StatusCode != http.StatusOK {
		t.Errorf("the admin's page after SIGHUP with a broken users file: %d, want 200 (session kept)\n%s", r.StatusCode, b)
	}
	if strings.Contains(m.Log(), "session ended") {
		t.Errorf("a console session was ended:\n%s", m.Log())
	}
}
