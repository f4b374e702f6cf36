//go:build integration

package integration

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestConsoleRolesApplyOnSIGHUP: with the real binary, an admin demoted
// to viewer in the users file (by `mailgate admin passwd -role viewer`)
// and an account whose line is deleted lose their rights when mailgate
// gets SIGHUP, in the sessions they already have open.
func TestConsoleRolesApplyOnSIGHUP(t *testing.T) {
	hs := need(t)
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

	signIn := func(user, pw string) (*http.Client, string) {
		jar, _ := cookiejar.New(nil)
		cl := &http.Client{Jar: jar, Timeout: 30 * time.Second,
			CheckRedirect: func(r *http.Request, _ []*http.Request) error {
				if strings.HasSuffix(r.URL.Path, "/login") {
					return http.ErrUseLastResponse
				}
				return nil
			}}
		r, err := cl.PostForm(base+"/console/login", url.Values{"user": {user}, "password": {pw}})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		tok := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindSubmatch(b)
		if tok == nil {
			t.Fatalf("sign-in of %s: %d\n%s", user, r.StatusCode, b)
		}
		return cl, string(tok[1])
	}
	admin, tok := signIn(consoleAdmin, consoleAdminPW)
	viewer, _ := signIn(consoleViewer, consoleViewerPW)

	cmd := exec.Command(hs.mailgateBin, "admin", "passwd", "-file", users, "-cost", "4", "-role", "viewer", consoleAdmin)
	cmd.Stdin = strings.NewReader(consoleAdminPW + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mailgate admin passwd: %v\n%s", err, out)
	}
	data, err := os.ReadFile(users)
	if err != nil {
		t.Fatal(err)
	}
	var keep []string
	for _, l := range strings.Split(string(data), "\n") {
		if !strings.HasPrefix(l, consoleViewer+":") {
			keep = append(keep, l)
		}
	}
	if err := os.WriteFile(users, []byte(strings.Join(keep, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	n := strings.Count(m.Log(), reloadOK)
	if err := m.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !waitFor(func() bool { return strings.Count(m.Log(), reloadOK) > n }, eventually) {
		t.Fatalf("no reload after SIGHUP:\n%s", m.Log())
	}
	if !hasLine(m.Log(), "console: session's role changed by the users file", "console_user="+consoleAdmin, "role=viewer") ||
		!hasLine(m.Log(), "console: session ended, account removed from the users file", "console_user="+consoleViewer) {
		t.Errorf("the reload did not log the changed and the ended session:\n%s", m.Log())
	}

	r, err := admin.PostForm(base+"/console/bans/add", url.Values{"csrf": {tok}, "prefix": {"192.0.2.0/24"}, "duration": {"1h"}})
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusForbidden {
		t.Errorf("the demoted admin's ban after SIGHUP: %d, want 403", r.StatusCode)
	}
	r, err = viewer.Get(base + "/console/bans")
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusSeeOther {
		t.Errorf("the removed account's page after SIGHUP: %d, want a redirect to sign in", r.StatusCode)
	}
}
