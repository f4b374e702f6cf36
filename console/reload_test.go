package console

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"
)

// TestReloadUsersAppliesRoles: after ReloadUsers a demoted admin's open
// session can change nothing, a removed account's session is over (its
// open event stream ends at once, not at the next tick), an unchanged
// account keeps its session (a file that cannot be read:
// TestReloadUsersKeepsStateOnBrokenFile).
func TestReloadUsersAppliesRoles(t *testing.T) {
	f := newFixture(t)
	ck, tok := f.signIn("root", adminPW)
	vck, _ := f.signIn("help", viewerPW)
	srv := httptest.NewServer(f.h)
	t.Cleanup(srv.Close)
	req, _ := http.NewRequestWithContext(t.Context(), "GET", srv.URL+"/console/events", nil)
	req.AddCookie(&http.Cookie{Name: cookieName, Value: vck})
	stream, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Body.Close()
	buf := make([]byte, 4096)
	if _, err := stream.Body.Read(buf); err != nil {
		t.Fatalf("first event: %v", err)
	}

	// root becomes a viewer, help is removed.
	data := "root:viewer:" + hash(t, adminPW) + "\n"
	if err := os.WriteFile(f.srv.c.UsersFile, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := f.srv.ReloadUsers(); err != nil {
		t.Fatal(err)
	}
	r := f.do("POST", "/console/bans/add", "127.0.0.1:5000", ck, url.Values{"csrf": {tok}, "prefix": {"192.0.2.0/24"}, "duration": {"1h"}}, "Sec-Fetch-Site", "same-origin")
	if r.StatusCode != http.StatusForbidden || len(f.g.Bans()) != 0 {
		t.Errorf("demoted admin's ban: %d, bans %v; want 403 and no ban", r.StatusCode, f.g.Bans())
	}
	if b := bodyOf(t, f.do("GET", "/console/bans", "127.0.0.1:5000", ck, nil)); strings.Contains(b, "/console/bans/add") {
		t.Error("demoted admin still sees the change forms")
	}
	if r := f.do("GET", "/console/", "127.0.0.1:5000", vck, nil); r.StatusCode != http.StatusSeeOther {
		t.Errorf("removed account's session: %d, want a redirect to sign in", r.StatusCode)
	}
	// The removed account's stream ends well before the next tick.
	ended := make(chan error, 1)
	go func() {
		for {
			if _, err := stream.Body.Read(buf); err != nil {
				ended <- err
				return
			}
		}
	}()
	select {
	case <-ended:
	case <-time.After(eventEvery * 3 / 4):
		t.Error("the removed account's event stream is still open")
	}

}
