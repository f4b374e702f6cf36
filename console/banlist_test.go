package console

import (
	"encoding/json"
	"fmt"
	"html"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/guard"
)

// bansShown is the page size docs/console.md promises for the bans page.
const bansShown = 100

// loadGuardState puts bans and lockouts into g through a state file,
// as a restart would: the quick way to a guard that holds thousands.
func loadGuardState(t *testing.T, g *guard.Guard, bans []guard.Ban, locks []guard.Lockout) {
	t.Helper()
	data, err := json.Marshal(map[string]any{"version": 1, "saved": time.Now(), "bans": bans, "lockouts": locks})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "guard.state")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := g.Load(path); err != nil {
		t.Fatal(err)
	}
}

// manyBansAndLockouts loads n bans and n lockouts into f's guard: the
// bans end at only five different times (so the order among equal ends
// matters), every tenth is an admin's "Spray wave" ban; every hundredth
// lockout is a compromise lockout, and the lockouts of ten console
// accounts are among them.
func manyBansAndLockouts(t *testing.T, f *fixture, n int) {
	t.Helper()
	now := time.Now().Truncate(time.Second)
	var bans []guard.Ban
	var locks []guard.Lockout
	for i := range n {
		b := guard.Ban{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 32),
			Created: now.Add(-time.Minute), Until: now.Add(time.Hour + time.Duration(i%5)*time.Minute),
			Reason: "failures", Offence: 1 + i%3}
		if i%10 == 0 {
			b.Reason, b.Manual, b.Offence = "Spray wave (by root)", true, 0
		}
		bans = append(bans, b)
		l := guard.Lockout{Login: fmt.Sprintf("user%04d@example.test", i), Created: now.Add(-time.Minute), Until: now.Add(time.Hour), Reason: "failures"}
		switch {
		case i%100 == 0:
			l.Until, l.Compromised, l.Reason = time.Time{}, true, "logins from 3 countries"
		case i%100 == 1:
			l.Login = guard.ConsoleLogin(fmt.Sprintf("ops%02d", i/100))
		}
		locks = append(locks, l)
	}
	loadGuardState(t, f.g, bans, locks)
	if len(f.g.Bans()) != n || len(f.g.Lockouts()) != n {
		t.Fatalf("guard holds %d bans and %d lockouts, want %d each", len(f.g.Bans()), len(f.g.Lockouts()), n)
	}
}

var (
	banRowRE  = regexp.MustCompile(`<tr><th scope="row">([^<]+)</th><td>[^<]*</td><td>[^<]*</td><td>[^<]*</td><td>(manual|guard, offence \d)</td>`)
	lockRowRE = regexp.MustCompile(`<tr><th scope="row">([^<]+)</th><td>(console account|mail login)</td>`)
	hrefRE    = regexp.MustCompile(`<a href="([^"]+)">(Previous|Next) page</a>`)
)

// bansPage is what one bans page shows.
type bansPage struct {
	body                  string
	bans, locks           []string // the rows' first cells
	banCount, lockCount   string   // the "Bans 1 to 100 of 1000." lines
	banNext, lockNext     string
	banPrev, lockPrev     string
	banForms, lockForms   int
	banFilter, lockFilter string // the filter fields' values
}

func parseBansPage(t *testing.T, body string) bansPage {
	t.Helper()
	p := bansPage{body: body}
	bansPart, locksPart, ok := strings.Cut(body, `<h2 id="locks">`)
	if !ok {
		t.Fatalf("no lockouts section:\n%s", body)
	}
	for _, m := range banRowRE.FindAllStringSubmatch(bansPart, -1) {
		p.bans = append(p.bans, html.UnescapeString(m[1]))
	}
	for _, m := range lockRowRE.FindAllStringSubmatch(locksPart, -1) {
		p.locks = append(p.locks, html.UnescapeString(m[1])+" "+m[2])
	}
	line := func(part, id string) (text, prev, next string) {
		_, rest, ok := strings.Cut(part, `<p id="`+id+`-count">`)
		if !ok {
			return "(no count line)", "", ""
		}
		text, _, _ = strings.Cut(rest, "</p>")
		for _, m := range hrefRE.FindAllStringSubmatch(text, -1) {
			if m[2] == "Next" {
				next = html.UnescapeString(m[1])
			} else {
				prev = html.UnescapeString(m[1])
			}
		}
		text, _, _ = strings.Cut(text, " <a ")
		return html.UnescapeString(text), prev, next
	}
	p.banCount, p.banPrev, p.banNext = line(bansPart, "bq")
	p.lockCount, p.lockPrev, p.lockNext = line(locksPart, "lq")
	p.banForms = strings.Count(bansPart, `action="/console/bans/remove"`)
	p.lockForms = strings.Count(locksPart, `action="/console/lockouts/unlock"`)
	filter := func(id string) string {
		m := regexp.MustCompile(`<input id="` + id + `" name="` + id + `" value="([^"]*)"`).FindStringSubmatch(body)
		if m == nil {
			return "(no filter field)"
		}
		return html.UnescapeString(m[1])
	}
	p.banFilter, p.lockFilter = filter("bq"), filter("lq")
	return p
}

// TestBansPagePaged: with 1,000 bans and 1,000 lockouts each list shows
// at most a page of rows, its pages (followed by their Next links, the
// other list's page kept) cover every row exactly once in a stable order
// (bans soonest to end first, equal ends by address; lockouts by login),
// the filters narrow, bad parameters are a 400 with the reason, and the
// forms keep working and bring the admin back to the same view.
func TestBansPagePaged(t *testing.T) {
	const n = 1000
	f := newFixture(t)
	manyBansAndLockouts(t, f, n)
	ck, tok := f.signIn("root", adminPW)
	get := func(path string) (int, bansPage) {
		t.Helper()
		path, _, _ = strings.Cut(path, "#") // a browser keeps the fragment to itself
		r := f.do("GET", path, "127.0.0.1:5000", ck, nil)
		return r.StatusCode, parseBansPage(t, bodyOf(t, r))
	}

	// The whole page is bounded, not just each list.
	code, p := get("/console/bans")
	if code != 200 || len(p.bans) != bansShown || len(p.locks) != bansShown ||
		p.banCount != "Bans 1 to 100 of 1000." || p.lockCount != "Locked logins 1 to 100 of 1000." {
		t.Fatalf("first page: %d, %d bans, %d lockouts, %q, %q; want %d of each", code, len(p.bans), len(p.locks), p.banCount, p.lockCount, bansShown)
	}
	if p.banNext != "/console/bans?bp=1#bans" || p.lockNext != "/console/bans?lp=1#locks" || p.banPrev != "" || p.lockPrev != "" {
		t.Errorf("first page's links: bans next %q prev %q, lockouts next %q prev %q", p.banNext, p.banPrev, p.lockNext, p.lockPrev)
	}
	t.Logf("first page: %d bytes", len(p.body))
	if len(p.body) > 200<<10 {
		t.Errorf("first page is %d bytes", len(p.body))
	}

	// Every ban once, in order, the lockouts staying on their page 3.
	var want []string
	all := f.g.Bans()
	slices.SortFunc(all, func(a, b guard.Ban) int {
		if c := a.Until.Compare(b.Until); c != 0 {
			return c
		}
		return a.Prefix.Addr().Compare(b.Prefix.Addr())
	})
	for _, b := range all {
		want = append(want, b.Prefix.String())
	}
	var got []string
	pages := 0
	for next := "/console/bans?lp=2"; next != ""; pages++ {
		if pages > n/bansShown {
			t.Fatalf("more than %d pages of bans", pages)
		}
		code, p := get(next)
		if code != 200 || len(p.bans) > bansShown || len(p.locks) != bansShown || p.lockCount != "Locked logins 201 to 300 of 1000." {
			t.Fatalf("GET %s: %d, %d bans, %d lockouts (%q)", next, code, len(p.bans), len(p.locks), p.lockCount)
		}
		if wantCount := fmt.Sprintf("Bans %d to %d of 1000.", pages*bansShown+1, pages*bansShown+len(p.bans)); p.banCount != wantCount {
			t.Errorf("GET %s: %q, want %q", next, p.banCount, wantCount)
		}
		got = append(got, p.bans...)
		next = p.banNext
	}
	if pages != n/bansShown || !slices.Equal(got, want) {
		t.Errorf("%d pages of bans; the rows, in order, are not every ban once soonest to end first (%d rows)", pages, len(got))
	}

	// Every lockout once, by login, the bans staying on their page 2.
	got = got[:0]
	pages = 0
	for next := "/console/bans?bp=1"; next != ""; pages++ {
		if pages > n/bansShown {
			t.Fatalf("more than %d pages of lockouts", pages)
		}
		code, p := get(next)
		if code != 200 || len(p.locks) > bansShown || p.banCount != "Bans 101 to 200 of 1000." {
			t.Fatalf("GET %s: %d, %d lockouts, bans %q", next, code, len(p.locks), p.banCount)
		}
		got = append(got, p.locks...)
		next = p.lockNext
	}
	want = want[:0]
	for _, l := range f.g.Lockouts() {
		if l.Console != "" {
			want = append(want, l.Console+" console account")
		} else {
			want = append(want, l.Login+" mail login")
		}
	}
	if pages != n/bansShown || !slices.Equal(got, want) {
		t.Errorf("%d pages of lockouts; the rows are not every lockout once by login (%d rows)", pages, len(got))
	}

	// The filters: case does not matter, they look at what is shown, and
	// the other list's view is kept.
	code, p = get("/console/bans?bq=SPRAY+Wave&lp=1")
	if code != 200 || len(p.bans) != n/10 || p.banCount != "Bans 1 to 100 of 100 matching “spray wave” (1000 in all)." ||
		p.banNext != "" || p.lockCount != "Locked logins 101 to 200 of 1000." || p.banFilter != "spray wave" {
		t.Errorf("filter spray wave: %d, %d bans, %q, next %q, %q", code, len(p.bans), p.banCount, p.banNext, p.lockCount)
	}
	if !strings.Contains(p.body, `<input type="hidden" name="lp" value="1">`) {
		t.Error("the bans filter form does not keep the lockouts' page")
	}
	if _, p = get("/console/bans?bq=manual&bp=0"); len(p.bans) != bansShown || p.banCount != "Bans 1 to 100 of 100 matching “manual” (1000 in all)." {
		t.Errorf("filter manual (the kind column): %q", p.banCount)
	}
	if _, p = get("/console/bans?bq=10.0.3."); len(p.bans) != bansShown || p.banCount != "Bans 1 to 100 of 232 matching “10.0.3.” (1000 in all)." {
		t.Errorf("filter 10.0.3.: %q", p.banCount)
	}
	if _, p = get("/console/bans?lq=compromise+SIGNAL"); len(p.locks) != 10 || p.lockCount != "Locked logins 1 to 10 of 10 matching “compromise signal” (1000 in all)." {
		t.Errorf("filter compromise signal: %d, %q", len(p.locks), p.lockCount)
	}
	if _, p = get("/console/bans?lq=console+account"); len(p.locks) != 10 || !strings.HasSuffix(p.locks[0], " console account") {
		t.Errorf("filter console account: %d rows %q", len(p.locks), p.locks)
	}
	if _, p = get("/console/bans?lq=console%3A"); len(p.locks) != 0 || p.lockCount != "No locked login matches “console:” (1000 in all)." ||
		!strings.Contains(p.body, "No locked login matches the filter.") {
		t.Errorf("filter on the guard's key of a console account: %d rows, %q", len(p.locks), p.lockCount)
	}

	// Past the end: the totals, and a way back to the last page.
	if code, p = get("/console/bans?bp=50&lp=3"); code != 200 || len(p.bans) != 0 || p.banCount != "No bans on this page: 1000 in all." ||
		p.banPrev != "/console/bans?bp=9&lp=3#bans" || !strings.Contains(p.body, "None on this page.") {
		t.Errorf("past the end: %d, %d rows, %q, prev %q", code, len(p.bans), p.banCount, p.banPrev)
	}

	// Bad parameters: 400 with the reason, the other list as asked.
	for _, q := range []string{"bp=-1", "bp=x", "bp=100001", "bp=99999999999999999999", "bq=" + strings.Repeat("a", 65), "bq=a%00b", "bq=a%0Ab"} {
		r := f.do("GET", "/console/bans?lp=2&"+q, "127.0.0.1:5000", ck, nil)
		b := bodyOf(t, r)
		if r.StatusCode != http.StatusBadRequest || !strings.Contains(b, "Bans: the filter is at most 64 printable characters, the page a number from 0 to 100000.") {
			t.Errorf("?%s: %d, want 400 with the reason:\n%s", q, r.StatusCode, b)
			continue
		}
		if p := parseBansPage(t, b); p.banCount != "Bans 1 to 100 of 1000." || p.lockCount != "Locked logins 201 to 300 of 1000." {
			t.Errorf("?%s: %q, %q; want the first page of bans and the lockouts' third", q, p.banCount, p.lockCount)
		}
	}
	if r := f.do("GET", "/console/bans?lp=-2&lq=%01", "127.0.0.1:5000", ck, nil); r.StatusCode != http.StatusBadRequest ||
		!strings.Contains(bodyOf(t, r), "Locked logins: the filter is at most") {
		t.Errorf("bad lockouts view: %d, want 400", r.StatusCode)
	}

	// A viewer pages too, without forms.
	vck, _ := f.signIn("help", viewerPW)
	r := f.do("GET", "/console/bans?bp=3&lp=2", "127.0.0.1:5000", vck, nil)
	vb := bodyOf(t, r)
	if vp := parseBansPage(t, vb); r.StatusCode != 200 || len(vp.bans) != bansShown || len(vp.locks) != bansShown || vp.banForms+vp.lockForms != 0 ||
		strings.Contains(vb, "/console/bans/add") {
		t.Errorf("viewer's page: %d, %d bans, %d lockouts, %d forms", r.StatusCode, len(vp.bans), len(vp.locks), vp.banForms+vp.lockForms)
	}

	// The admin lifts a ban and unlocks a login on later pages, and comes
	// back to the same view.
	_, p = get("/console/bans?bp=3&lp=2&bq=failures")
	if p.banForms != len(p.bans) || p.lockForms != len(p.locks) || len(p.bans) != bansShown {
		t.Fatalf("admin's page: %d forms for %d bans, %d for %d lockouts", p.banForms, len(p.bans), p.lockForms, len(p.locks))
	}
	view := url.Values{"csrf": {tok}, "bp": {"3"}, "bq": {"failures"}, "lp": {"2"}}
	lift := url.Values{"prefix": {p.bans[7]}}
	for k, v := range view {
		lift[k] = v
	}
	formHas := fmt.Sprintf(`<input type="hidden" name="bp" value="3"><input type="hidden" name="bq" value="failures"><input type="hidden" name="lp" value="2"><input type="hidden" name="prefix" value="%s">`, p.bans[7])
	if !strings.Contains(p.body, formHas) {
		t.Errorf("the lift form lacks the view: want %s", formHas)
	}
	r = f.do("POST", "/console/bans/remove", "127.0.0.1:5000", ck, lift, "Sec-Fetch-Site", "same-origin")
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/console/bans?bp=3&bq=failures&lp=2" || len(f.g.Bans()) != n-1 {
		t.Errorf("lift on page 4: %d to %q, %d bans left", r.StatusCode, r.Header.Get("Location"), len(f.g.Bans()))
	}
	if _, p = get(r.Header.Get("Location")); p.banCount != "Bans 301 to 400 of 899 matching “failures” (999 in all)." || slices.Contains(p.bans, lift.Get("prefix")) {
		t.Errorf("after the lift: %q", p.banCount)
	}
	login, _, _ := strings.Cut(p.locks[5], " ")
	unlock := url.Values{"login": {login}}
	for k, v := range view {
		unlock[k] = v
	}
	r = f.do("POST", "/console/lockouts/unlock", "127.0.0.1:5000", ck, unlock, "Sec-Fetch-Site", "same-origin")
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/console/bans?bp=3&bq=failures&lp=2#locks" || len(f.g.Lockouts()) != n-1 {
		t.Errorf("unlock on page 3: %d to %q, %d lockouts left", r.StatusCode, r.Header.Get("Location"), len(f.g.Lockouts()))
	}
	// A failed action shows the list as it was viewed, with the error.
	r = f.do("POST", "/console/lockouts/unlock", "127.0.0.1:5000", ck, unlock, "Sec-Fetch-Site", "same-origin")
	if b := bodyOf(t, r); r.StatusCode != http.StatusNotFound || parseBansPage(t, b).lockCount != "Locked logins 201 to 300 of 999." {
		t.Errorf("unlocking again: %d, want 404 on the same view", r.StatusCode)
	}
}
