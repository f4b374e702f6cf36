package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/cmd/mailgate/internal/admin"
	"github.com/mailgate/mailgate/console"
	"golang.org/x/crypto/bcrypt"
)

func TestAdminPasswd(t *testing.T) {
	file := filepath.Join(t.TempDir(), "console.users")
	passwd := func(stdin string, args ...string) (int, string) {
		var out, errb bytes.Buffer
		code := run(append([]string{"admin", "passwd", "-file", file}, args...), strings.NewReader(stdin), &out, &errb)
		return code, out.String() + errb.String()
	}
	if code, out := passwd("first-password\n", "-role", "admin", "ann"); code != 0 || !strings.Contains(out, "ann: account created (admin)") {
		t.Fatalf("create: %d %s", code, out)
	}
	if users, err := console.ReadUsers(file); err != nil || len(users) != 1 {
		t.Fatalf("users %+v, %v", users, err)
	} else if c, _ := bcrypt.Cost([]byte(users[0].Hash)); c != console.BcryptCost {
		t.Errorf("bcrypt cost %d, want the default %d", c, console.BcryptCost)
	}
	// The rest at -cost 4: cost 12 takes seconds under the race detector.
	if code, out := passwd("viewer-password", "-cost", "4", "bob"); code != 0 || !strings.Contains(out, "bob: account created (viewer)") {
		t.Fatalf("create without a newline: %d %s", code, out)
	}
	before, _ := os.ReadFile(file)
	if code, out := passwd("second-password\n", "-cost", "4", "ann"); code != 0 || !strings.Contains(out, "ann: password changed (admin)") {
		t.Fatalf("change keeps the role: %d %s", code, out)
	}
	users, err := console.ReadUsers(file)
	if err != nil || len(users) != 2 || users[0].Name != "ann" || users[0].Role != console.RoleAdmin || users[1].Name != "bob" {
		t.Fatalf("users %+v, %v", users, err)
	}
	if after, _ := os.ReadFile(file); bytes.Equal(before, after) || strings.Contains(string(after), "second-password") {
		t.Error("the hash did not change, or the password is in the file")
	}
	for _, u := range users {
		if c, _ := bcrypt.Cost([]byte(u.Hash)); c != 4 {
			t.Errorf("%s: -cost 4 made a hash of cost %d", u.Name, c)
		}
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("new users file mode %v, %v; want 0600", fi.Mode(), err)
	}
	for _, tc := range []struct {
		stdin string
		args  []string
		want  string
	}{
		{"short\n", []string{"ann"}, "at least 10 characters"},
		{"", []string{"ann"}, "no password on standard input"},
		{"long-enough-pw\n", []string{"bad name"}, "user name"},
		{"long-enough-pw\n", []string{"-role", "root", "ann"}, "want viewer or admin"},
		{strings.Repeat("x", 73) + "\n", []string{"ann"}, "at most 72 bytes"},
		{"long-enough-pw\n", []string{"-cost", "3", "ann"}, "-cost 3: want 4 to 17"},
		{"long-enough-pw\n", []string{"-cost", "18", "ann"}, "-cost 18: want 4 to 17"},
	} {
		if code, out := passwd(tc.stdin, tc.args...); code != exitError || !strings.Contains(out, tc.want) {
			t.Errorf("passwd %q with %q: %d %q, want exit 2 and %q", tc.args, tc.stdin, code, out, tc.want)
		}
	}
}

// TestConsoleOnAdminListener: the console mounted by the gateway's
// admin listener signs in a user made by `mailgate admin passwd` and
// shows the gateway's own counters: a denied login appears among the
// overview's results.
func TestConsoleOnAdminListener(t *testing.T) {
	e := startOpsEnv(t)
	file := filepath.Join(t.TempDir(), "console.users")
	if _, _, err := setConsoleUser(file, "ops", console.RoleAdmin, mustHash(t, "console-password")); err != nil {
		t.Fatal(err)
	}
	cs := newConsole(e.g, ConsoleConfig{UsersFile: file})
	go cs.Run(t.Context())
	srv := httptest.NewServer(newAdminServer(e.g, testAdminToken, nil, func(c *admin.Config) { c.Console = cs.Handler() }).Handler())
	defer srv.Close()

	if r := imapLogin(t, e.imap, "127.0.0.2", "alice", "wonderland"); !strings.Contains(r, "NO") {
		t.Fatalf("login from RU: %q, want NO", r)
	}
	jar, _ := cookiejar.New(nil)
	cl := &http.Client{Jar: jar}
	r, err := cl.PostForm(srv.URL+"/console/login", url.Values{"user": {"ops"}, "password": {"console-password"}})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(r.Body)
	r.Body.Close()
	page := string(body)
	for _, want := range []string{"<title>Overview - mailgate console</title>", "countryfailed", "Geo databases", "Certificates"} {
		if !strings.Contains(page, want) {
			t.Errorf("overview after sign-in lacks %q:\n%s", want, page)
		}
	}
	// A logged-in IMAP session is listed with its country, and an admin
	// disconnects it: the client sees its connection closed.
	conn, err := net.Dial("tcp", e.imap)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(conn)
	br.ReadString('\n')
	fmt.Fprintf(conn, "a LOGIN alice@example.test alicepass\r\n")
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("login: %v", err)
		}
		if strings.HasPrefix(l, "a ") {
			if !strings.HasPrefix(l, "a OK") {
				t.Fatalf("login: %q", l)
			}
			break
		}
	}
	r, err = cl.Get(srv.URL + "/console/sessions")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(r.Body)
	r.Body.Close()
	page = string(body)
	id := regexp.MustCompile(`name="id" value="([a-z0-9]+)"`).FindStringSubmatch(page)
	tok := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(page)
	if id == nil || tok == nil || !strings.Contains(page, "<th scope=\"row\">alice@example.test</th><td>127.0.0.1</td><td>US</td>") {
		t.Fatalf("live sessions page lacks alice's session from the US:\n%s", page)
	}
	r, err = cl.PostForm(srv.URL+"/console/sessions/disconnect", url.Values{"csrf": {tok[1]}, "id": {id[1]}})
	if err != nil || r.StatusCode != 200 {
		t.Fatalf("disconnect: %v %v", r, err)
	}
	r.Body.Close()
	if _, err := br.ReadString('\n'); err == nil {
		t.Error("the disconnected client can still read")
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(e.g.srv.LiveSessions()) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("live sessions after the disconnect: %+v", e.g.srv.LiveSessions())
		}
		time.Sleep(20 * time.Millisecond)
	}

	// The bearer token does not open the console, and the console's
	// cookie does not open the token API.
	req, _ := http.NewRequestWithContext(context.Background(), "GET", srv.URL+"/guard/bans", nil)
	if r, err := cl.Do(req); err != nil || r.StatusCode != http.StatusUnauthorized {
		t.Errorf("/guard/bans with the console cookie: %v %v, want 401", r.StatusCode, err)
	}
}

func mustHash(t *testing.T, pw string) string {
	t.Helper()
	var out, errb bytes.Buffer
	file := filepath.Join(t.TempDir(), "h")
	// -cost 4: the default 12 takes seconds per check under the race detector.
	if code := run([]string{"admin", "passwd", "-file", file, "-cost", "4", "x"}, strings.NewReader(pw+"\n"), &out, &errb); code != 0 {
		t.Fatalf("passwd: %s", errb.String())
	}
	u, err := console.ReadUsers(file)
	if err != nil {
		t.Fatal(err)
	}
	return u[0].Hash
}

// TestConsoleUsersFileChecked: check-config and serve refuse a users file
// that is missing, broken or readable by every user.
func TestConsoleUsersFileChecked(t *testing.T) {
	dir := t.TempDir()
	if err := checkConsoleUsers(ConsoleConfig{UsersFile: filepath.Join(dir, "missing")}); err == nil || !strings.Contains(err.Error(), "admin.console.users_file") {
		t.Errorf("missing file: %v", err)
	}
	broken := filepath.Join(dir, "broken")
	os.WriteFile(broken, []byte("ann:root:x\n"), 0o600)
	if err := checkConsoleUsers(ConsoleConfig{UsersFile: broken}); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("broken file: %v", err)
	}
	open := filepath.Join(dir, "open")
	os.WriteFile(open, nil, 0o644)
	os.Chmod(open, 0o644)
	p := adminInsecurities(AdminConfig{Address: "127.0.0.1:9100", Console: ConsoleConfig{UsersFile: open}})
	if len(p) != 1 || !strings.Contains(p[0], "accessible to all users") {
		t.Errorf("world-readable users file: %q", p)
	}
	p = adminInsecurities(AdminConfig{Address: "0.0.0.0:9100", TokenFile: "t", Console: ConsoleConfig{UsersFile: filepath.Join(dir, "missing")}})
	if len(p) != 1 || !strings.Contains(p[0], "without admin.tls") {
		t.Errorf("console on a public address without TLS: %q", p)
	}
	if p := adminInsecurities(AdminConfig{Address: "0.0.0.0:9100", TokenFile: "t", TLS: true, Console: ConsoleConfig{UsersFile: filepath.Join(dir, "missing")}}); len(p) != 0 {
		t.Errorf("console on a public address with TLS: %q", p)
	}
}
