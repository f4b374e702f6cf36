package console

import (
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/guard"
	"github.com/mailgate/mailgate/internal/authlimit"
)

// mailFailures makes n wrong mail passwords for login, as the proxy
// reports them to the guard, each from its own address so no address or
// network is banned on the way.
func mailFailures(t *testing.T, g *guard.Guard, login string, n int) {
	t.Helper()
	for i := range n {
		a := g.Attempt(login, netip.AddrFrom4([4]byte{10, 9, 0, byte(i + 1)}), fmt.Sprintf("guess-%d", i))
		if v := a.Begin(t.Context()); !v.Allow {
			t.Fatalf("mail attempt %d of %s refused: %s", i, login, v.Reason)
		}
		a.Finish(guard.WrongPassword, "")
	}
}

// TestMailLoginCannotLockConsoleAccount: a mail client that logs in as
// "console:root" and fails lockout.after times locks that mail login,
// not the console account root, which still signs in from an untrusted
// address; the bans page lists the lockout as a mail login's.
func TestMailLoginCannotLockConsoleAccount(t *testing.T) {
	f := newFixture(t)
	mailFailures(t, f.g, "console:root", guard.Defaults().Lockout.After)
	f.signInFrom("10.1.1.1:5000", "root", adminPW)

	ck, _ := f.signIn("root", adminPW)
	b := bodyOf(t, f.do("GET", "/console/bans", "127.0.0.1:5000", ck, nil))
	if !strings.Contains(b, `<th scope="row">console:root</th>`) || strings.Contains(b, "console account root") {
		t.Errorf("bans page should list the mail login console:root, not a console account:\n%s", b)
	}
}

// TestConsoleLockoutIsAConsoleOne: wrong console passwords lock the
// console account under its own key: the guard lists it with Console
// set, the bans page names it a console account, its Unlock form
// unlocks it, and no mail login of any spelling reaches that key.
func TestConsoleLockoutIsAConsoleOne(t *testing.T) {
	f := newFixture(t)
	key := guard.ConsoleLogin("help")
	if authlimit.Check(key, "pw") == "" {
		t.Fatalf("authlimit accepts the console key %q as a mail login", key)
	}
	for i := range guard.Defaults().Lockout.After {
		r := f.do("POST", "/console/login", fmt.Sprintf("10.9.1.%d:5000", i+1), "", url.Values{"user": {"help"}, "password": {fmt.Sprintf("wrong-%d", i)}}, "Sec-Fetch-Site", "same-origin")
		if r.StatusCode != 200 {
			t.Fatalf("wrong sign-in %d: %d", i, r.StatusCode)
		}
	}
	ls := f.g.Lockouts()
	if len(ls) != 1 || ls[0].Console != "help" || ls[0].Login != key {
		t.Fatalf("lockouts %+v, want the console account help", ls)
	}
	if f.g.Unlock("console:help") {
		t.Error("unlocking the mail login console:help unlocked the console account")
	}
	ck, tok := f.signIn("root", adminPW)
	b := bodyOf(t, f.do("GET", "/console/bans", "127.0.0.1:5000", ck, nil))
	if !strings.Contains(b, "console account help") || !strings.Contains(b, `name="console" value="help"`) {
		t.Fatalf("bans page does not name the console account:\n%s", b)
	}
	r := f.do("POST", "/console/lockouts/unlock", "127.0.0.1:5000", ck, url.Values{"csrf": {tok}, "console": {"help"}}, "Sec-Fetch-Site", "same-origin")
	if r.StatusCode != http.StatusSeeOther || len(f.g.Lockouts()) != 0 {
		t.Fatalf("unlock: %d, lockouts %+v", r.StatusCode, f.g.Lockouts())
	}
	if b := bodyOf(t, f.do("GET", "/console/actions", "127.0.0.1:5000", ck, nil)); !strings.Contains(b, "console account unlocked: help") {
		t.Errorf("action log lacks the unlock:\n%s", b)
	}
}
