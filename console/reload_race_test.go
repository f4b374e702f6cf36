package console

import (
	"net/http"
	"net/url"
	"os"
	"testing"
)

// TestSignInRacingReloadGetsNoRemovedRights: a sign-in that read the
// users file before a reload applied it (the reload ran while the
// password was checked) gets no session for an account the reload
// removed, and only the reload's role for one it demoted.
func TestSignInRacingReloadGetsNoRemovedRights(t *testing.T) {
	f := newFixture(t)
	// Between the sign-in's read and its password check: help is
	// removed, root demoted, and the file reloaded.
	f.srv.afterUsersRead = func() {
		data := "root:viewer:" + hash(t, adminPW) + "\n"
		if err := os.WriteFile(f.srv.c.UsersFile, []byte(data), 0o600); err != nil {
			t.Error(err)
		}
		if err := f.srv.ReloadUsers(); err != nil {
			t.Error(err)
		}
	}
	r := f.do("POST", "/console/login", "127.0.0.1:5000", "", url.Values{"user": {"help"}, "password": {viewerPW}}, "Sec-Fetch-Site", "same-origin")
	for _, c := range r.Cookies() {
		if c.Name == cookieName && c.Value != "" {
			if s := f.do("GET", "/console/", "127.0.0.1:5000", c.Value, nil); s.StatusCode == http.StatusOK {
				t.Error("the removed account got a working session")
			}
		}
	}
	if r.StatusCode == http.StatusSeeOther {
		t.Errorf("removed account's sign-in: %d, want the sign-in form again", r.StatusCode)
	}

	// root signs in as an admin per its read, but the reload made it a
	// viewer: the session is a viewer's.
	setRoot := func(role string) {
		if err := os.WriteFile(f.srv.c.UsersFile, []byte("root:"+role+":"+hash(t, adminPW)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	setRoot(RoleAdmin)
	if err := f.srv.ReloadUsers(); err != nil {
		t.Fatal(err)
	}
	f.srv.afterUsersRead = func() {
		setRoot(RoleViewer)
		if err := f.srv.ReloadUsers(); err != nil {
			t.Error(err)
		}
	}
	ck, tok := f.signIn("root", adminPW)
	f.srv.afterUsersRead = nil
	a := f.do("POST", "/console/bans/add", "127.0.0.1:5000", ck, url.Values{"csrf": {tok}, "prefix": {"192.0.2.0/24"}, "duration": {"1h"}}, "Sec-Fetch-Site", "same-origin")
	if a.StatusCode != http.StatusForbidden || len(f.g.Bans()) != 0 {
		t.Errorf("demoted admin's ban: %d, bans %v; want 403 and none", a.StatusCode, f.g.Bans())
	}
}
