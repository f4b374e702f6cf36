package console

import (
	"cmp"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/mailgate/mailgate/guard"
)

// The bans page's two lists are paged and filtered like the live
// sessions: under a spraying attack the guard holds up to
// guard.max_tracked bans and as many lockouts, and rendering them whole
// would make megabytes of HTML per view just when the admin needs the
// page. Each list has its own query parameters (bq and bp for the bans,
// lq and lp for the locked logins), so paging or filtering one keeps the
// other's view, and the lift and unlock forms carry the view back.

// banPerPage is how many rows one page of either list shows.
const banPerPage = livePerPage

// listView is one list's filter (lower case) and page (from 0).
type listView struct {
	q    string
	page int
}

// banView is what the bans page shows: each list's view.
type banView struct{ bans, locks listView }

// The bans page's query parameters.
const (
	banQ, banP   = "bq", "bp"
	lockQ, lockP = "lq", "lp"
)

// parseBanView reads the page's parameters from v (the URL's query, or
// a posted form's hidden fields). A list whose filter or page cannot be
// used shows its first page unfiltered, and bad says which list it is;
// "" when both are usable.
func parseBanView(v url.Values) (bv banView, bad string) {
	var wrong []string
	for _, l := range []struct {
		name, q, p string
		to         *listView
	}{{"Bans", banQ, banP, &bv.bans}, {"Locked logins", lockQ, lockP, &bv.locks}} {
		sv, ok := parseSessionView(v.Get(l.q), v.Get(l.p))
		if !ok {
			wrong = append(wrong, l.name)
			continue
		}
		*l.to = listView{q: sv.q, page: sv.page}
	}
	if len(wrong) == 0 {
		return bv, ""
	}
	return bv, fmt.Sprintf("%s: the filter is at most %d printable characters, the page a number from 0 to %d.",
		strings.Join(wrong, " and "), maxLiveQ, maxLivePage)
}

// values is bv as query parameters, the defaults left out.
func (bv banView) values() url.Values {
	u := url.Values{}
	for _, l := range []struct {
		q, p string
		v    listView
	}{{banQ, banP, bv.bans}, {lockQ, lockP, bv.locks}} {
		if l.v.q != "" {
			u.Set(l.q, l.v.q)
		}
		if l.v.page > 0 {
			u.Set(l.p, strconv.Itoa(l.v.page))
		}
	}
	return u
}

// url is the bans page showing bv, at the anchor if not "".
func (bv banView) url(anchor string) string {
	s := Prefix + "bans"
	if e := bv.values().Encode(); e != "" {
		s += "?" + e
	}
	if anchor != "" {
		s += "#" + anchor
	}
	return s
}

// field is one hidden form field.
type field struct{ Name, Value string }

// fields are v's hidden form fields, by name.
func fields(v url.Values) []field {
	var out []field
	for _, k := range slices.Sorted(maps.Keys(v)) {
		out = append(out, field{k, v.Get(k)})
	}
	return out
}

// listPage is what the page says about one list's view.
type listPage struct {
	Title, Plural, One string // "Bans", "bans", "ban"
	// ID is the filter's field (the query parameter), Columns what it
	// looks in, Empty what the table says when the list is.
	ID, Columns, Empty string
	Query              string
	Total              int // rows matching the filter
	All                int // rows in the list
	// First and Last number the rows shown, from 1; 0: none shown.
	First, Last int
	// PrevURL, NextURL: the neighbouring pages, ClearURL: the list
	// unfiltered, each keeping the other list's view; "": none.
	PrevURL, NextURL, ClearURL string
	// Keep is the other list's view, for this list's filter form.
	Keep []field
}

// pageRows returns the rows of v's page among those matching v's
// filter, and how many match: the one paging of the live sessions and
// the bans page's two lists.
func pageRows[T any](rows []T, v listView, match func(*T, string) bool) (page []T, total int) {
	skip := v.page * banPerPage
	for i := range rows {
		if v.q != "" && !match(&rows[i], v.q) {
			continue
		}
		if total >= skip && len(page) < banPerPage {
			page = append(page, rows[i])
		}
		total++
	}
	return page, total
}

// list describes bv's view of one list (the lockouts' when locks) with
// shown rows of total matching, all in the list.
func (bv banView) list(locks bool, shown, total, all int) listPage {
	v, anchor := bv.bans, "bans"
	lp := listPage{Title: "Bans", Plural: "bans", One: "ban", ID: banQ,
		Columns: "address or network, since, until, reason or kind", Empty: "No active bans."}
	if locks {
		v, anchor = bv.locks, "locks"
		lp = listPage{Title: "Locked logins", Plural: "locked logins", One: "locked login", ID: lockQ,
			Columns: "login, kind, since, until or reason", Empty: "No locked logins."}
	}
	lp.Query, lp.Total, lp.All = v.q, total, all
	at := func(l listView) string {
		o := bv
		if locks {
			o.locks = l
		} else {
			o.bans = l
		}
		return o.url(anchor)
	}
	skip := v.page * banPerPage
	if shown > 0 {
		lp.First, lp.Last = skip+1, skip+shown
	}
	if v.page > 0 {
		// Past the end (the list shrank): back to its last page.
		lp.PrevURL = at(listView{v.q, min(v.page-1, max(0, (total-1)/banPerPage))})
	}
	if total > skip+shown && v.page < maxLivePage {
		lp.NextURL = at(listView{v.q, v.page + 1})
	}
	if v.q != "" {
		lp.ClearURL = at(listView{})
	}
	other := bv
	if locks {
		other.locks = listView{}
	} else {
		other.bans = listView{}
	}
	lp.Keep = fields(other.values())
	return lp
}

// banRow is one row of the bans table.
type banRow struct {
	guard.Ban
	Kind string // "manual" or "guard, offence N", as shown
}

func banKind(b *guard.Ban) string {
	if b.Manual {
		return "manual"
	}
	return "guard, offence " + strconv.Itoa(b.Offence)
}

// containsAny: does any of fs, in lower case, contain q?
func containsAny(q string, fs ...string) bool {
	for _, f := range fs {
		if strings.Contains(strings.ToLower(f), q) {
			return true
		}
	}
	return false
}

// banMatches: does a column of b's row, as shown, contain q?
func banMatches(b *guard.Ban, q string) bool {
	return containsAny(q, b.Prefix.String(), when(b.Created), when(b.Until), b.Reason, banKind(b))
}

// lockMatches: does a column of l's row, as shown, contain q? A console
// account's row shows its name, not the guard key.
func lockMatches(l *guard.Lockout, q string) bool {
	name, kind := l.Login, "mail login"
	if l.Console != "" {
		name, kind = l.Console, "console account"
	}
	until := "until unlocked"
	if !l.Until.IsZero() {
		until = when(l.Until)
	}
	reason := l.Reason
	if l.Compromised {
		reason += " (compromise signal)"
	}
	return containsAny(q, name, kind, when(l.Created), until, reason)
}

// fill puts bv's pages of bans and lockouts in d. The orders are total
// (bans soonest to end first, then by network; lockouts by login), so
// that pages neither skip nor repeat a row while the lists stay as they
// are: the guard's own sort leaves bans ending at the same time in
// whatever order its table gives them.
func (d *bansData) fill(bv banView, bans []guard.Ban, locks []guard.Lockout) {
	slices.SortFunc(bans, func(a, b guard.Ban) int {
		return cmp.Or(a.Until.Compare(b.Until), a.Prefix.Addr().Compare(b.Prefix.Addr()), cmp.Compare(a.Prefix.Bits(), b.Prefix.Bits()))
	})
	slices.SortFunc(locks, func(a, b guard.Lockout) int {
		return cmp.Or(strings.Compare(a.Login, b.Login), a.Created.Compare(b.Created))
	})
	page, total := pageRows(bans, bv.bans, banMatches)
	for i := range page {
		d.Bans = append(d.Bans, banRow{page[i], banKind(&page[i])})
	}
	d.BanList = bv.list(false, len(page), total, len(bans))
	d.Lockouts, total = pageRows(locks, bv.locks, lockMatches)
	d.LockList = bv.list(true, len(d.Lockouts), total, len(locks))
}
