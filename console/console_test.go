package console

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/mailgate/mailgate/audit"
	"github.com/mailgate/mailgate/guard"
	"github.com/mailgate/mailgate/policy"
)

// fakeAudit answers Top and History from fixed rows.
type fakeAudit struct {
	top     map[string][]audit.TopRow
	history []audit.Row
	asked   audit.Query
}

func (f *fakeAudit) Top(_ context.Context, by string, _ time.Time, _ int) ([]audit.TopRow, error) {
	return f.top[by], nil
}

func (f *fakeAudit) History(_ context.Context, q audit.Query) ([]audit.Row, error) {
	f.asked = q
	return f.history, nil
}

// clock is a settable fake time.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// testGuard is a real guard without tarpit or failure penalty, so
// refusals are not slowed in unit tests.
func testGuard(t *testing.T) *guard.Guard {
	t.Helper()
	c := guard.Defaults()
	c.Tarpit.After = 0
	c.FailurePenalty.Init = 0
	g, err := guard.New(c, guard.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// hash makes a cheap bcrypt hash for tests.
func hash(t testing.TB, pw string) string {
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

const (
	adminPW  = "admin-secret-1"
	viewerPW = "viewer-secret-1"
)

type fixture struct {
	t     *testing.T
	srv   *Server
	h     http.Handler
	g     *guard.Guard
	audit *fakeAudit
	clock *clock
}

func newFixture(t *testing.T, mods ...func(*Config)) *fixture {
	t.Helper()
	file := filepath.Join(t.TempDir(), "console.users")
	data := "# console accounts\nroot:admin:" + hash(t, adminPW) + "\nhelp:viewer:" + hash(t, viewerPW) + "\n"
	if err := os.WriteFile(file, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, g: testGuard(t), clock: &clock{t: time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)}}
	f.audit = &fakeAudit{top: map[string][]audit.TopRow{
		"countries": {{Key: "RU", Failures: 3, Accounts: 1, Sources: 1}, {Key: "CN", Failures: 120, Accounts: 4, Sources: 9}},
		"accounts":  {{Key: "alice@example.test", Failures: 3}},
		"sources":   {{Key: "127.0.0.2", Failures: 3}},
	}, history: []audit.Row{{Account: "alice@example.test", Result: "denied", Cause: "policy.allow_countries", Addr: "127.0.0.2", Country: "RU", Count: 1}}}
	c := Config{
		UsersFile: file,
		Guard:     f.g,
		Audit:     f.audit,
		Decide: func(r policy.Request) policy.Decision {
			return policy.Decision{Allow: r.Addr == netip.MustParseAddr("127.0.0.1"), Rule: "policy.allow_countries", Reason: "test"}
		},
		Overview: func() Overview {
			return Overview{Sessions: 7, Logins: map[string]float64{"pass": 2, "countryfailed": 1}, ReloadAt: time.Unix(0, 0)}
		},
		Now: f.clock.now,
	}
	for _, m := range mods {
		m(&c)
	}
	f.srv = New(c)
	f.h = f.srv.Handler()
	return f
}

// do runs one request from remote (host:port) with the cookie, if any.
func (f *fixture) do(method, target, remote, cookie string, form url.Values, header ...string) *http.Response {
	f.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	r := httptest.NewRequest(method, "http://127.0.0.1:9100"+target, body)
	r.RemoteAddr = remote
	if form != nil {
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Set(header[i], header[i+1])
	}
	if cookie != "" {
		r.AddCookie(&http.Cookie{Name: cookieName, Value: cookie})
	}
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	return w.Result()
}

func bodyOf(t *testing.T, r *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// signIn signs in and returns the cookie value and the form token.
func (f *fixture) signIn(user, pw string) (cookie, csrf string) {
	f.t.Helper()
	r := f.do("POST", "/console/login", "127.0.0.1:5000", "", url.Values{"user": {user}, "password": {pw}}, "Sec-Fetch-Site", "same-origin")
	if r.StatusCode != http.StatusSeeOther {
		f.t.Fatalf("sign-in of %s: %d %s", user, r.StatusCode, bodyOf(f.t, r))
	}
	for _, c := range r.Cookies() {
		if c.Name == cookieName {
			cookie = c.Value
			if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != Prefix || c.Secure {
				f.t.Errorf("cookie %+v: want HttpOnly, SameSite=Strict, Path=%s, not Secure over plain HTTP", c, Prefix)
			}
		}
	}
	page := bodyOf(f.t, f.do("GET", "/console/", "127.0.0.1:5000", cookie, nil))
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(page)
	if m == nil {
		f.t.Fatalf("no form token on the overview:\n%s", page)
	}
	return cookie, m[1]
}

func TestSignInRolesAndPages(t *testing.T) {
	f := newFixture(t)
	if r := f.do("GET", "/console/", "127.0.0.1:5000", "", nil); r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/console/login" {
		t.Fatalf("overview without a session: %d %q, want a redirect to the sign-in form", r.StatusCode, r.Header.Get("Location"))
	}
	ck, tok := f.signIn("root", adminPW)
	for path, want := range map[string]string{
		"/console/":                  `<dd id="sessions" aria-live="polite">7</dd>`,
		"/console/countries?span=1h": `id="c-RU" class="h1" data-failures="3"`,
		"/console/account?user=alice%40example.test":               "policy.allow_countries",
		"/console/policy?user=alice%40example.test&addr=127.0.0.2": `<span id="verdict" class="bad">deny</span>`,
		"/console/bans": "Add a ban",
	} {
		r := f.do("GET", path, "127.0.0.1:5000", ck, nil)
		b := bodyOf(t, r)
		if r.StatusCode != 200 || !strings.Contains(b, want) {
			t.Errorf("GET %s: %d, want 200 with %q:\n%s", path, r.StatusCode, want, b)
		}
		if csp := r.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
			t.Errorf("GET %s: Content-Security-Policy %q", path, csp)
		}
	}
	if !strings.Contains(bodyOf(t, f.do("GET", "/console/countries", "127.0.0.1:5000", ck, nil)), `id="c-CN" class="h3" data-failures="120"`) {
		t.Error("the map does not shade China for 120 failures")
	}

	// The admin adds a ban and lifts it; the action log has both.
	r := f.do("POST", "/console/bans/add", "127.0.0.1:5000", ck, url.Values{"csrf": {tok}, "prefix": {"192.0.2.0/24"}, "duration": {"1h"}, "reason": {"test"}}, "Sec-Fetch-Site", "same-origin")
	if r.StatusCode != http.StatusSeeOther || len(f.g.Bans()) != 1 {
		t.Fatalf("add ban: %d, bans %v", r.StatusCode, f.g.Bans())
	}
	r = f.do("POST", "/console/bans/remove", "127.0.0.1:5000", ck, url.Values{"csrf": {tok}, "prefix": {"192.0.2.0/24"}}, "Sec-Fetch-Site", "same-origin")
	if r.StatusCode != http.StatusSeeOther || len(f.g.Bans()) != 0 {
		t.Fatalf("lift ban: %d, bans %v", r.StatusCode, f.g.Bans())
	}
	if b := bodyOf(t, f.do("GET", "/console/actions", "127.0.0.1:5000", ck, nil)); !strings.Contains(b, "ban lifted: 192.0.2.0/24") || !strings.Contains(b, "ban added: 192.0.2.0/24") ||
		!strings.Contains(b, "does not survive a restart") {
		t.Errorf("action log lacks the two changes or the in-memory note:\n%s", b)
	}

	// A viewer sees no forms and a forged POST (with its own valid
	// token) is refused.
	vck, vtok := f.signIn("help", viewerPW)
	f.g.AddBan(netip.MustParsePrefix("198.51.100.0/24"), time.Hour, "x")
	b := bodyOf(t, f.do("GET", "/console/bans", "127.0.0.1:5000", vck, nil))
	if strings.Contains(b, "/console/bans/remove") || strings.Contains(b, "/console/bans/add") || !strings.Contains(b, "198.51.100.0/24") {
		t.Errorf("viewer's bans page shows change forms or lacks the ban:\n%s", b)
	}
	r = f.do("POST", "/console/bans/remove", "127.0.0.1:5000", vck, url.Values{"csrf": {vtok}, "prefix": {"198.51.100.0/24"}}, "Sec-Fetch-Site", "same-origin")
	if r.StatusCode != http.StatusForbidden || len(f.g.Bans()) != 1 {
		t.Errorf("viewer's lift: %d, bans %v; want 403 and the ban kept", r.StatusCode, f.g.Bans())
	}

	// Sign-out ends the session.
	f.do("POST", "/console/logout", "127.0.0.1:5000", ck, url.Values{"csrf": {tok}}, "Sec-Fetch-Site", "same-origin")
	if r := f.do("GET", "/console/bans", "127.0.0.1:5000", ck, nil); r.StatusCode != http.StatusSeeOther {
		t.Errorf("after sign-out: %d, want a redirect to sign in", r.StatusCode)
	}
}

func TestCrossSiteAndTokenlessPostsRefused(t *testing.T) {
	f := newFixture(t)
	ck, tok := f.signIn("root", adminPW)
	form := url.Values{"csrf": {tok}, "prefix": {"192.0.2.0/24"}, "duration": {"1h"}}
	for _, h := range [][]string{
		{"Sec-Fetch-Site", "cross-site"},
		{"Sec-Fetch-Site", "same-site"}, // another port on the same host
		{"Origin", "http://evil.example"},
	} {
		if r := f.do("POST", "/console/bans/add", "127.0.0.1:5000", ck, form, h...); r.StatusCode != http.StatusForbidden {
			t.Errorf("POST with %v: %d, want 403", h, r.StatusCode)
		}
	}
	// Same origin but without the session's form token.
	if r := f.do("POST", "/console/bans/add", "127.0.0.1:5000", ck, url.Values{"prefix": {"192.0.2.0/24"}, "duration": {"1h"}}, "Sec-Fetch-Site", "same-origin"); r.StatusCode != http.StatusForbidden {
		t.Errorf("POST without the form token: %d, want 403", r.StatusCode)
	}
	// A cross-site sign-in (login CSRF) is refused too.
	if r := f.do("POST", "/console/login", "127.0.0.1:5000", "", url.Values{"user": {"root"}, "password": {adminPW}}, "Sec-Fetch-Site", "cross-site"); r.StatusCode != http.StatusForbidden {
		t.Errorf("cross-site sign-in: %d, want 403", r.StatusCode)
	}
	if n := len(f.g.Bans()); n != 0 {
		t.Errorf("%d bans after refused posts", n)
	}
}

// TestSignInRefusalsLookAlike: a wrong password, an unknown user, a
// banned address and a locked account get one answer; five distinct
// wrong passwords lock the account for that address like a mail login.
func TestSignInRefusalsLookAlike(t *testing.T) {
	f := newFixture(t)
	try := func(remote, user, pw string) (int, string) {
		r := f.do("POST", "/console/login", remote, "", url.Values{"user": {user}, "password": {pw}}, "Sec-Fetch-Site", "same-origin")
		return r.StatusCode, bodyOf(t, r)
	}
	code, want := try("127.0.0.1:5000", "root", "wrong-1")
	if code != 200 || !strings.Contains(want, signInFailed) {
		t.Fatalf("wrong password: %d\n%s", code, want)
	}
	for i := 2; i <= 5; i++ {
		if c, b := try("127.0.0.1:5000", "root", fmt.Sprintf("wrong-%d", i)); c != code || b != want {
			t.Fatalf("wrong password %d: %d, a different answer:\n%s", i, c, b)
		}
	}
	// Locked for this address now: the right password gets the same answer.
	if c, b := try("127.0.0.1:5000", "root", adminPW); c != code || b != want {
		t.Errorf("right password after five wrong ones: %d\n%s\nwant the wrong-password answer", c, b)
	}
	// From another address the owner still gets in.
	f.signInFrom("10.1.1.1:5000", "root", adminPW)
	if c, b := try("127.0.0.3:5000", "nobody", "x"); c != code || b != want {
		t.Errorf("unknown user: %d\n%s", c, b)
	}
	if c, b := try("127.0.0.3:5000", "bad name\n", "x"); c != code || b != want {
		t.Errorf("invalid user name: %d\n%s", c, b)
	}
	f.g.AddBan(netip.MustParsePrefix("192.0.2.7/32"), time.Hour, "test")
	if c, b := try("192.0.2.7:5000", "help", viewerPW); c != code || b != want {
		t.Errorf("banned address with the right password: %d\n%s", c, b)
	}
}

func (f *fixture) signInFrom(remote, user, pw string) {
	f.t.Helper()
	r := f.do("POST", "/console/login", remote, "", url.Values{"user": {user}, "password": {pw}}, "Sec-Fetch-Site", "same-origin")
	if r.StatusCode != http.StatusSeeOther {
		f.t.Errorf("sign-in of %s from %s: %d, want 303", user, remote, r.StatusCode)
	}
}

func TestIdleTimeoutEndsSession(t *testing.T) {
	f := newFixture(t)
	ck, _ := f.signIn("help", viewerPW)
	f.clock.add(DefaultIdleTimeout - time.Minute)
	if r := f.do("GET", "/console/", "127.0.0.1:5000", ck, nil); r.StatusCode != 200 {
		t.Fatalf("within the idle timeout: %d", r.StatusCode)
	}
	f.clock.add(DefaultIdleTimeout + time.Second)
	if r := f.do("GET", "/console/", "127.0.0.1:5000", ck, nil); r.StatusCode != http.StatusSeeOther {
		t.Errorf("after the idle timeout: %d, want a redirect to sign in", r.StatusCode)
	}
}

// TestEventStreamDoesNotKeepSession: the stream's check of the session
// (every tick) is no activity: a tab left open ends at the idle timeout.
func TestEventStreamDoesNotKeepSession(t *testing.T) {
	f := newFixture(t)
	ck, _ := f.signIn("help", viewerPW)
	f.clock.add(DefaultIdleTimeout / 2)
	if f.srv.lookup(ck, false) == nil {
		t.Fatal("session gone within the idle timeout")
	}
	f.clock.add(DefaultIdleTimeout / 2)
	f.srv.lookup(ck, false)
	f.clock.add(DefaultIdleTimeout / 2)
	if r := f.do("GET", "/console/", "127.0.0.1:5000", ck, nil); r.StatusCode != http.StatusSeeOther {
		t.Errorf("after 1.5 idle timeouts with only the stream asking: %d, want a redirect to sign in", r.StatusCode)
	}
}

func TestParseUsers(t *testing.T) {
	h := hash(t, "x")
	u, err := ParseUsers([]byte("# c\n\nann:admin:" + h + "\n bob:viewer:" + h + " \n"))
	if err != nil || len(u) != 2 || u[0].Name != "ann" || u[1].Role != RoleViewer {
		t.Fatalf("ParseUsers = %+v, %v", u, err)
	}
	slow := "$2a$18$abcdefghijklmnopqrstuu5sXp8Ms9PdU6XbUnB8oLSnPqd2B7kBq" // cost 18
	_, err = ParseUsers([]byte("ann:admin:" + h + "\nann:viewer:" + h + "\nx y:admin:" + h + "\ncarl:root:" + h + "\ndan:admin:plain\nnocolon\neve:admin:" + slow + "\n"))
	for _, want := range []string{"line 2: user ann named twice", "line 3: user name", "line 4: role", "line 5: not a bcrypt hash", "line 6: want user:role:hash", "line 7: bcrypt cost 18 is above 17"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
}

// TestDummyHashFollowsTheUsersCost: an unknown name is checked against
// a hash as slow as the slowest account, not a fixed cost 12 (which,
// with cheap test hashes, made unknown names the slow ones).
func TestDummyHashFollowsTheUsersCost(t *testing.T) {
	cheap := hash(t, "x") // bcrypt.MinCost
	for _, c := range []struct {
		users []User
		want  int
	}{
		{nil, BcryptCost},
		{[]User{{Name: "a", Hash: cheap}}, bcrypt.MinCost},
		{[]User{{Name: "a", Hash: cheap}, {Name: "b", Hash: "$2a$05$abcdefghijklmnopqrstuu5sXp8Ms9PdU6XbUnB8oLSnPqd2B7kBq"}}, 5},
	} {
		got, err := bcrypt.Cost(dummyHash(c.users))
		if err != nil || got != c.want {
			t.Errorf("dummyHash(%d users): cost %d (%v), want %d", len(c.users), got, err, c.want)
		}
	}
}

func FuzzParseUsers(f *testing.F) {
	f.Add([]byte("ann:admin:$2a$04$abcdefghijklmnopqrstuu5sXp8Ms9PdU6XbUnB8oLSnPqd2B7kBq\n"))
	f.Add([]byte("# c\n\nx::\n:::\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		users, err := ParseUsers(data)
		for _, u := range users {
			if !ValidUserName(u.Name) || (u.Role != RoleAdmin && u.Role != RoleViewer) {
				t.Fatalf("accepted %+v", u)
			}
			if c, err := bcrypt.Cost([]byte(u.Hash)); err != nil || c > MaxBcryptCost {
				t.Fatalf("accepted hash of cost %d (%v): %+v", c, err, u)
			}
		}
		_ = err
	})
}

func TestExceptionsPage(t *testing.T) {
	f := newFixture(t)
	var got []policy.Change
	f.srv.c.Exceptions = func() ([]Exception, error) {
		return []Exception{{User: "alice@example.test", Target: "FR", Until: f.clock.now().Add(-time.Hour), Where: "rules.yaml:3"}}, nil
	}
	f.srv.c.Allow = func(ch policy.Change) ([]string, error) { got = append(got, ch); return []string{"added"}, nil }
	f.srv.c.Revoke = func(ch policy.Change) ([]string, error) { got = append(got, ch); return []string{"removed"}, nil }
	ck, tok := f.signIn("root", adminPW)
	b := bodyOf(t, f.do("GET", "/console/exceptions", "127.0.0.1:5000", ck, nil))
	if !strings.Contains(b, "(expired)") || !strings.Contains(b, `aria-label="Revoke alice@example.test from FR"`) {
		t.Errorf("exceptions page:\n%s", b)
	}
	r := f.do("POST", "/console/exceptions/allow", "127.0.0.1:5000", ck, url.Values{"csrf": {tok}, "user": {"bob@example.test"}, "target": {"JP"},
		"until": {"2026-12-20"}, "proto": {"imap"}, "note": {"trip"}}, "Sec-Fetch-Site", "same-origin")
	if b := bodyOf(t, r); r.StatusCode != 200 || !strings.Contains(b, "added") {
		t.Fatalf("allow: %d\n%s", r.StatusCode, b)
	}
	if len(got) != 1 || got[0].User != "bob@example.test" || got[0].Target != "JP" || got[0].Until.IsZero() ||
		len(got[0].Protocols) != 1 || got[0].Note != "trip (console: root)" {
		t.Errorf("allow change = %+v", got)
	}
	r = f.do("POST", "/console/exceptions/allow", "127.0.0.1:5000", ck, url.Values{"csrf": {tok}, "user": {"bob"}, "target": {"JP"}, "until": {"soon"}}, "Sec-Fetch-Site", "same-origin")
	if r.StatusCode != http.StatusBadRequest || len(got) != 1 {
		t.Errorf("allow with a bad until: %d, %d changes", r.StatusCode, len(got))
	}
	vck, vtok := f.signIn("help", viewerPW)
	if b := bodyOf(t, f.do("GET", "/console/exceptions", "127.0.0.1:5000", vck, nil)); strings.Contains(b, "/console/exceptions/") {
		t.Errorf("viewer sees edit forms:\n%s", b)
	}
	r = f.do("POST", "/console/exceptions/revoke", "127.0.0.1:5000", vck, url.Values{"csrf": {vtok}, "user": {"alice@example.test"}, "target": {"FR"}}, "Sec-Fetch-Site", "same-origin")
	if r.StatusCode != http.StatusForbidden || len(got) != 1 {
		t.Errorf("viewer's revoke: %d, %d changes", r.StatusCode, len(got))
	}
}

// TestCountryFiguresLiveWhenFast: a small history is read afresh on each
// visit (only slow answers are kept for topsTTL).
func TestCountryFiguresLiveWhenFast(t *testing.T) {
	f := newFixture(t)
	ck, _ := f.signIn("help", viewerPW)
	f.do("GET", "/console/countries?span=1h", "127.0.0.1:5000", ck, nil)
	f.audit.top["countries"] = []audit.TopRow{{Key: "BR", Failures: 5, Accounts: 1, Sources: 1}}
	if b := bodyOf(t, f.do("GET", "/console/countries?span=1h", "127.0.0.1:5000", ck, nil)); !strings.Contains(b, `id="c-BR" class="h1" data-failures="5"`) {
		t.Errorf("the second visit shows old figures:\n%s", b)
	}
}

// TestEventStream: the overview's live figures arrive as server-sent
// events for a signed-in session, and the stream needs one.
func TestEventStream(t *testing.T) {
	f := newFixture(t)
	ck, _ := f.signIn("help", viewerPW)
	srv := httptest.NewServer(f.h)
	defer srv.Close()
	req, _ := http.NewRequestWithContext(t.Context(), "GET", srv.URL+"/console/events", nil)
	req.AddCookie(&http.Cookie{Name: cookieName, Value: ck})
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	if ct := r.Header.Get("Content-Type"); r.StatusCode != 200 || ct != "text/event-stream" {
		t.Fatalf("events: %d %q", r.StatusCode, ct)
	}
	buf := make([]byte, 512)
	n, _ := io.ReadAtLeast(r.Body, buf, 20)
	if got := string(buf[:n]); !strings.HasPrefix(got, "event: overview\ndata: {\"sessions\":7,") {
		t.Errorf("first event %q", got)
	}
	// Without a session: no stream.
	if r := f.do("GET", "/console/events", "127.0.0.1:5000", "", nil); r.StatusCode != http.StatusSeeOther {
		t.Errorf("events without a session: %d", r.StatusCode)
	}
}

// TestActionLogLasts: with an action log store (the audit database) an
// admin's change is written to it, the action log page reads it from
// there, and a console started afresh on the same database still shows it.
func TestActionLogLasts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.db")
	st, err := audit.Open(audit.Config{Path: path}, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	f := newFixture(t, func(c *Config) { c.ActionLog = st })
	ck, tok := f.signIn("root", adminPW)
	r := f.do("POST", "/console/bans/add", "127.0.0.1:5000", ck, url.Values{"csrf": {tok}, "prefix": {"192.0.2.0/24"}, "duration": {"1h"}, "reason": {"test"}}, "Sec-Fetch-Site", "same-origin")
	if r.StatusCode != http.StatusSeeOther {
		t.Fatalf("add ban: %d", r.StatusCode)
	}
	acts, err := st.Actions(t.Context(), 0, 0)
	if err != nil || len(acts) != 1 || acts[0].User != "root" || acts[0].Remote != "127.0.0.1" || !strings.HasPrefix(acts[0].What, "ban added: 192.0.2.0/24 for 1h0m0s") {
		t.Fatalf("stored actions %+v, %v", acts, err)
	}
	if b := bodyOf(t, f.do("GET", "/console/actions", "127.0.0.1:5000", ck, nil)); !strings.Contains(b, "ban added: 192.0.2.0/24") || !strings.Contains(b, "they survive a restart") {
		t.Errorf("action log page:\n%s", b)
	}

	// A restarted console (nothing in memory) reads it from the database.
	st.AddAction(t.Context(), audit.Action{Time: f.clock.now(), User: "ops", Remote: "::1", What: "login unlocked: bob@example.test"})
	f2 := newFixture(t, func(c *Config) { c.ActionLog = st })
	ck2, _ := f2.signIn("help", viewerPW)
	b := bodyOf(t, f2.do("GET", "/console/actions", "127.0.0.1:5000", ck2, nil))
	i, j := strings.Index(b, "login unlocked: bob@example.test"), strings.Index(b, "ban added: 192.0.2.0/24")
	if i < 0 || j < 0 || i > j {
		t.Errorf("restarted console's action log (want both, newest first):\n%s", b)
	}
}

// TestSessionEventStream: the live sessions page's stream sends the
// table's rows, rendered for the session's role and escaped, and a
// session that starts later shows up in a later event.
func TestSessionEventStream(t *testing.T) {
	var mu sync.Mutex
	live := []Session{{ID: "s1", Account: "alice@example.test", Addr: netip.MustParseAddr("192.0.2.7"), Protocol: "imap", Listener: "imaps"}}
	f := newFixture(t, func(c *Config) {
		c.Sessions = func() []Session { mu.Lock(); defer mu.Unlock(); return slices.Clone(live) }
		c.Disconnect = func(string) bool { return false }
	})
	srv := httptest.NewServer(f.h)
	t.Cleanup(srv.Close) // after the streams' bodies are closed
	stream := func(ck string) *bufio.Reader {
		req, _ := http.NewRequestWithContext(t.Context(), "GET", srv.URL+"/console/events?page=sessions", nil)
		req.AddCookie(&http.Cookie{Name: cookieName, Value: ck})
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Body.Close() })
		if ct := r.Header.Get("Content-Type"); r.StatusCode != 200 || ct != "text/event-stream" {
			t.Fatalf("events: %d %q", r.StatusCode, ct)
		}
		return bufio.NewReader(r.Body)
	}
	// next reads one event: its name and its data lines joined as a
	// browser joins them.
	next := func(br *bufio.Reader) (string, string) {
		var name string
		var data []string
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("reading the stream: %v", err)
			}
			l = strings.TrimSuffix(l, "\n")
			switch {
			case l == "":
				return name, strings.Join(data, "\n")
			case strings.HasPrefix(l, "event: "):
				name = l[len("event: "):]
			case strings.HasPrefix(l, "data: "):
				data = append(data, l[len("data: "):])
			default:
				t.Fatalf("stray line %q", l)
			}
		}
	}

	ck, tok := f.signIn("root", adminPW)
	br := stream(ck)
	name, rows := next(br)
	if name != "sessions" || !strings.Contains(rows, "alice@example.test") || !strings.Contains(rows, `value="`+tok+`"`) || !strings.Contains(rows, "Disconnect") {
		t.Fatalf("admin's first event %q:\n%s", name, rows)
	}
	// The page's own table has the same rows.
	if b := bodyOf(t, f.do("GET", "/console/sessions", "127.0.0.1:5000", ck, nil)); !strings.Contains(b, `<tbody id="live-rows" data-stream="/console/events?page=sessions">`+"\n"+rows) || !strings.Contains(b, "console.js") {
		t.Errorf("the page's rows differ from the event's or it has no script:\n%s", b)
	}

	mu.Lock()
	live = append(live, Session{ID: "s2", Account: "<b>bob</b>", Addr: netip.MustParseAddr("2001:db8::2"), Protocol: "pop3", Listener: "pop3s"})
	mu.Unlock()
	if name, rows = next(br); name != "sessions" || !strings.Contains(rows, "&lt;b&gt;bob&lt;/b&gt;") || strings.Contains(rows, "<b>") || !strings.Contains(rows, "alice@example.test") {
		t.Errorf("event after a new session %q:\n%s", name, rows)
	}

	// A viewer's rows have no Disconnect form.
	vck, _ := f.signIn("help", viewerPW)
	if name, rows = next(stream(vck)); name != "sessions" || !strings.Contains(rows, "alice@example.test") || strings.Contains(rows, "Disconnect") {
		t.Errorf("viewer's event %q:\n%s", name, rows)
	}
}
