package console

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/guard"
)

// TestLockoutListNeverConfusesMailAndConsole: a locked mail login
// spelled "console account help" and the locked console account help
// are two rows the bans page keeps apart: the login in its own cell and
// the kind in the next, and the Unlock buttons' labels differ, so no
// mail login can pose as a console account.
func TestLockoutListNeverConfusesMailAndConsole(t *testing.T) {
	f := newFixture(t)
	mailFailures(t, f.g, "console account help", guard.Defaults().Lockout.After)
	for i := range guard.Defaults().Lockout.After {
		f.do("POST", "/console/login", fmt.Sprintf("10.9.1.%d:5000", i+1), "", url.Values{"user": {"help"}, "password": {fmt.Sprintf("wrong-%d", i)}}, "Sec-Fetch-Site", "same-origin")
	}
	if n := len(f.g.Lockouts()); n != 2 {
		t.Fatalf("%d lockouts, want 2: %+v", n, f.g.Lockouts())
	}
	ck, _ := f.signIn("root", adminPW)
	b := bodyOf(t, f.do("GET", "/console/bans", "127.0.0.1:5000", ck, nil))
	for _, want := range []string{
		`<th scope="row">help</th><td>console account</td>`,
		`<th scope="row">console account help</th><td>mail login</td>`,
		`aria-label="Unlock console account help"`,
		`aria-label="Unlock mail login console account help"`,
	} {
		if strings.Count(b, want) != 1 {
			t.Errorf("bans page has %d of %s, want 1", strings.Count(b, want), want)
		}
	}
	// The rows' visible text differs.
	tags := regexp.MustCompile(`<[^>]*>`)
	var rows []string
	for _, m := range regexp.MustCompile(`(?s)<tr><th scope="row">.*?</tr>`).FindAllString(b, -1) {
		if strings.Contains(m, "lockouts/unlock") {
			rows = append(rows, strings.Join(strings.Fields(tags.ReplaceAllString(m, " ")), " "))
		}
	}
	if len(rows) != 2 || rows[0] == rows[1] {
		t.Errorf("lockout rows %q: want two different ones", rows)
	}
}
