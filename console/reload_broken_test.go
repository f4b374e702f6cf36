package console

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
)

// lockedBuf is a log sink safe for the server's goroutines.
type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestReloadUsersKeepsStateOnBrokenFile: a users file that cannot be
// read or parsed at a reload (caught half rewritten, or moved away)
// keeps every session with its role and logs an ERROR; the next good
// reload applies the file as usual.
func TestReloadUsersKeepsStateOnBrokenFile(t *testing.T) {
	var logs lockedBuf
	f := newFixture(t, func(c *Config) { c.Log = slog.New(slog.NewTextHandler(&logs, nil)) })
	ck, tok := f.signIn("root", adminPW)
	vck, _ := f.signIn("help", viewerPW)
	good, err := os.ReadFile(f.srv.c.UsersFile)
	if err != nil {
		t.Fatal(err)
	}
	addBan := func(prefix string) int {
		r := f.do("POST", "/console/bans/add", "127.0.0.1:5000", ck, url.Values{"csrf": {tok}, "prefix": {prefix}, "duration": {"1h"}}, "Sec-Fetch-Site", "same-origin")
		return r.StatusCode
	}

	for _, broken := range []struct {
		name  string
		apply func() error
	}{
		{"half written", func() error {
			return os.WriteFile(f.srv.c.UsersFile, good[:len(good)/2], 0o600)
		}},
		{"not a hash", func() error {
			return os.WriteFile(f.srv.c.UsersFile, []byte("root:viewer:not-a-hash\n"), 0o600)
		}},
		{"missing", func() error { return os.Remove(f.srv.c.UsersFile) }},
	} {
		if err := broken.apply(); err != nil {
			t.Fatal(err)
		}
		if err := f.srv.ReloadUsers(); err == nil {
			t.Errorf("%s: ReloadUsers gave no error", broken.name)
		}
		if r := f.do("GET", "/console/", "127.0.0.1:5000", vck, nil); r.StatusCode != http.StatusOK {
			t.Errorf("%s: viewer's session after the reload: %d, want 200 (kept)", broken.name, r.StatusCode)
		}
		if code := addBan("192.0.2.0/24"); code != http.StatusSeeOther && code != http.StatusOK {
			t.Errorf("%s: admin's ban after the reload: %d, want it done (role kept)", broken.name, code)
		}
	}
	if !strings.Contains(logs.String(), "level=ERROR msg=\"console: users file unreadable on reload; console sessions and accounts kept\"") {
		t.Errorf("no ERROR line for the broken file:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), "session ended") {
		t.Errorf("a session was ended:\n%s", logs.String())
	}

	// The next good file applies: help is removed.
	data := "root:admin:" + hash(t, adminPW) + "\n"
	if err := os.WriteFile(f.srv.c.UsersFile, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := f.srv.ReloadUsers(); err != nil {
		t.Fatal(err)
	}
	if r := f.do("GET", "/console/", "127.0.0.1:5000", vck, nil); r.StatusCode != http.StatusSeeOther {
		t.Errorf("removed account's session after a good reload: %d, want a redirect to sign in", r.StatusCode)
	}
	if r := f.do("GET", "/console/", "127.0.0.1:5000", ck, nil); r.StatusCode != http.StatusOK {
		t.Errorf("kept account's session after a good reload: %d, want 200", r.StatusCode)
	}
}
