package console

import (
	"cmp"
	"context"
	"fmt"
	"html/template"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/mailgate/mailgate/audit"
	"github.com/mailgate/mailgate/geo"
	"github.com/mailgate/mailgate/guard"
	"github.com/mailgate/mailgate/policy"
)

// pageNames are the templates under templates/, each with layout.html.
var pageNames = []string{"login", "error", "overview", "bans", "countries", "account", "policy", "actions", "sessions", "exceptions"}

func parsePages() map[string]*template.Template {
	funcs := template.FuncMap{
		"when": when,
		"bytes": func(n int64) string {
			switch {
			case n >= 10<<20:
				return fmt.Sprintf("%d MiB", n>>20)
			case n >= 10<<10:
				return fmt.Sprintf("%d KiB", n>>10)
			}
			return fmt.Sprintf("%d B", n)
		},
		"country": func(code string) string {
			if n := geo.CountryName(code); n != "" {
				return n
			}
			return code
		},
	}
	out := map[string]*template.Template{}
	for _, p := range pageNames {
		out[p] = template.Must(template.New("layout.html").Funcs(funcs).ParseFS(assets, "templates/layout.html", "templates/"+p+".html"))
	}
	return out
}

// when is how the pages show a time.
func when(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

// pageData is what every page template gets.
type pageData struct {
	Title string // the page's own title; <title> adds " - mailgate console"
	Page  string // template name, for the current item of the navigation
	User  string // signed-in console user; "" on the sign-in page
	Admin bool
	CSRF  string
	Error string // an alert shown above the content
	Data  any
}

func (s *Server) render(w http.ResponseWriter, r *http.Request, page string, sess *session, code int, title, errMsg string, data any) {
	d := pageData{Title: title, Page: page, Error: errMsg, Data: data}
	if sess != nil {
		d.User, d.Admin, d.CSRF = sess.user, sess.role == roleAdmin, sess.csrf
	}
	var b strings.Builder
	if err := s.pages[page].Execute(&b, d); err != nil {
		s.c.Log.Error("console: page failed to render", "page", page, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(b.String()))
}

func (s *Server) errorPage(w http.ResponseWriter, r *http.Request, sess *session, code int, msg string) {
	s.render(w, r, "error", sess, code, http.StatusText(code), msg, nil)
}

// ---- overview ----

type countRow struct {
	Key   string
	Count float64
}

type overviewData struct {
	O         Overview
	Rate      string
	Uptime    string
	Logins    []countRow
	Decisions []countRow
	Geo       []geoRow
	Certs     []certRow
}

type geoRow struct {
	GeoDB
	Age string
}

type certRow struct {
	Cert
	Left string
	Soon bool // under 14 days
}

func sortedCounts(m map[string]float64, limit int) []countRow {
	var out []countRow
	for k, v := range m {
		out = append(out, countRow{k, v})
	}
	slices.SortFunc(out, func(a, b countRow) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), strings.Compare(a.Key, b.Key))
	})
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out
}

func days(d time.Duration) string {
	n := int(d.Hours() / 24)
	if n == 1 || n == -1 {
		return fmt.Sprintf("%d day", n)
	}
	return fmt.Sprintf("%d days", n)
}

func (s *Server) overview(w http.ResponseWriter, r *http.Request, sess *session) {
	var o Overview
	if s.c.Overview != nil {
		o = s.c.Overview()
	}
	now := s.c.Now()
	d := overviewData{O: o, Rate: "not known yet (needs a minute of samples)"}
	var total float64
	for _, n := range o.Logins {
		total += n
	}
	if pm, ok := s.rate.perMinute(now, total); ok {
		d.Rate = fmt.Sprintf("%.1f", pm)
	}
	if !o.Started.IsZero() {
		d.Uptime = now.Sub(o.Started).Round(time.Second).String()
	}
	d.Logins = sortedCounts(o.Logins, 0)
	d.Decisions = sortedCounts(o.Decisions, 15)
	for _, g := range o.Geo {
		age := "unknown (the database states no build date)"
		if !g.Built.IsZero() {
			age = days(now.Sub(g.Built))
		}
		d.Geo = append(d.Geo, geoRow{g, age})
	}
	for _, c := range o.Certs {
		left := c.NotAfter.Sub(now)
		d.Certs = append(d.Certs, certRow{c, days(left), left < 14*24*time.Hour})
	}
	slices.SortFunc(d.Certs, func(a, b certRow) int { return a.NotAfter.Compare(b.NotAfter) })
	s.render(w, r, "overview", sess, http.StatusOK, "Overview", "", d)
}

// ---- bans and lockouts ----

type bansData struct {
	Bans     []banRow // this page's (banlist.go)
	Lockouts []guard.Lockout
	// BanList and LockList say what each list shows; View is the page's
	// view as hidden fields, for the lift, unlock and add forms.
	BanList, LockList listPage
	View              []field
	NoGuard           bool
	// The add form's values, kept after an error.
	Prefix, Duration, Reason string
}

// Ban form limits, as the admin API's.
const (
	maxBan    = 366 * 24 * time.Hour
	maxReason = 200
	maxLogin  = 320
)

func (s *Server) bansPage(w http.ResponseWriter, r *http.Request, sess *session, code int, errMsg string, d bansData) {
	bv, bad := s.banView(r)
	if bad != "" && errMsg == "" {
		errMsg, code = bad, http.StatusBadRequest
	}
	if s.c.Guard == nil {
		d.NoGuard = true
	} else {
		d.fill(bv, s.c.Guard.Bans(), s.c.Guard.Lockouts())
	}
	d.View = fields(bv.values())
	s.render(w, r, "bans", sess, code, "Bans and lockouts", errMsg, d)
}

// banView is the bans page's view of r: its query, or for a form the
// view the form was posted from.
func (s *Server) banView(r *http.Request) (banView, string) {
	if r.Method == http.MethodPost {
		_ = r.ParseForm() // already parsed for the form token
		return parseBanView(r.PostForm)
	}
	return parseBanView(r.URL.Query())
}

// backToBans answers a done change with the view it was made from.
func (s *Server) backToBans(w http.ResponseWriter, r *http.Request, anchor string) {
	bv, _ := s.banView(r)
	http.Redirect(w, r, bv.url(anchor), http.StatusSeeOther)
}

func (s *Server) bans(w http.ResponseWriter, r *http.Request, sess *session) {
	s.bansPage(w, r, sess, http.StatusOK, "", bansData{Duration: "24h"})
}

func (s *Server) addBan(w http.ResponseWriter, r *http.Request, sess *session) {
	d := bansData{Prefix: r.PostFormValue("prefix"), Duration: r.PostFormValue("duration"), Reason: r.PostFormValue("reason")}
	if s.c.Guard == nil {
		s.bansPage(w, r, sess, http.StatusConflict, "The brute-force guard is off.", d)
		return
	}
	p, err := geo.ParseNetwork(strings.TrimSpace(d.Prefix))
	if err != nil {
		s.bansPage(w, r, sess, http.StatusBadRequest, "Address or network: "+err.Error(), d)
		return
	}
	dur, err := time.ParseDuration(strings.TrimSpace(d.Duration))
	if err != nil || dur < time.Second || dur > maxBan {
		s.bansPage(w, r, sess, http.StatusBadRequest, fmt.Sprintf("Duration: want a duration between 1s and %v, like 90m or 24h.", maxBan), d)
		return
	}
	reason := strings.TrimSpace(d.Reason)
	if len(reason) > maxReason || strings.ContainsFunc(reason, func(c rune) bool { return !unicode.IsPrint(c) }) {
		s.bansPage(w, r, sess, http.StatusBadRequest, fmt.Sprintf("Reason: at most %d printable characters.", maxReason), d)
		return
	}
	if reason == "" {
		reason = "console"
	}
	b, err := s.c.Guard.AddBan(p, dur, reason+" (by "+sess.user+")")
	if err != nil {
		s.bansPage(w, r, sess, http.StatusConflict, err.Error(), d)
		return
	}
	s.record(sess, r, fmt.Sprintf("ban added: %s for %v (%s)", b.Prefix, dur, reason))
	s.backToBans(w, r, "")
}

func (s *Server) removeBan(w http.ResponseWriter, r *http.Request, sess *session) {
	if s.c.Guard == nil {
		s.bansPage(w, r, sess, http.StatusConflict, "The brute-force guard is off.", bansData{})
		return
	}
	p, err := geo.ParseNetwork(r.PostFormValue("prefix"))
	if err != nil {
		s.bansPage(w, r, sess, http.StatusBadRequest, "Address or network: "+err.Error(), bansData{})
		return
	}
	if !s.c.Guard.RemoveBan(p) {
		s.bansPage(w, r, sess, http.StatusNotFound, "No ban of "+p.String()+" (it may have ended).", bansData{})
		return
	}
	s.record(sess, r, "ban lifted: "+p.String())
	s.backToBans(w, r, "")
}

func (s *Server) unlock(w http.ResponseWriter, r *http.Request, sess *session) {
	if s.c.Guard == nil {
		s.bansPage(w, r, sess, http.StatusConflict, "The brute-force guard is off.", bansData{})
		return
	}
	if name := r.PostFormValue("console"); name != "" {
		// A console account's lockout: its own guard key, never a
		// mail login's.
		if !ValidUserName(name) {
			s.bansPage(w, r, sess, http.StatusBadRequest, "Console account: want the locked account as listed.", bansData{})
			return
		}
		if !s.c.Guard.Unlock(guard.ConsoleLogin(name)) {
			s.bansPage(w, r, sess, http.StatusNotFound, "That console account is not locked (the lockout may have ended).", bansData{})
			return
		}
		s.record(sess, r, "console account unlocked: "+strings.ToLower(name))
		s.backToBans(w, r, "locks")
		return
	}
	login := r.PostFormValue("login")
	if login == "" || len(login) > maxLogin || strings.ContainsFunc(login, func(c rune) bool { return !unicode.IsPrint(c) }) {
		s.bansPage(w, r, sess, http.StatusBadRequest, "Login: want the locked login as listed.", bansData{})
		return
	}
	if !s.c.Guard.Unlock(login) {
		s.bansPage(w, r, sess, http.StatusNotFound, "That login is not locked (the lockout may have ended).", bansData{})
		return
	}
	s.record(sess, r, "login unlocked: "+strings.ToLower(login))
	s.backToBans(w, r, "locks")
}

// ---- failed and denied logins by country ----

// spans are the periods the country page offers.
var spans = []struct{ Key, Label string }{{"1h", "1 hour"}, {"24h", "24 hours"}, {"7d", "7 days"}}

type countryRow struct {
	audit.TopRow
	Name string
}

type mapShape struct {
	Code, Name, Path string
	Failures         int64
	Class            string
}

type countriesData struct {
	Span      string
	SpanLabel string
	Spans     []struct{ Key, Label string }
	NoAudit   bool
	Err       string
	Rows      []countryRow
	Accounts  []audit.TopRow
	Sources   []audit.TopRow
	Shapes    []mapShape
	MapHeight int
	Total     int64
	AsOf      time.Time
}

// topsTTL: the country page's figures are reused this long when they
// took at least topsSlow to make. Each set is three grouping queries over
// the period's rows (0.15 to 0.5 s for 100,000 rows on the 2-core CI
// machine; docs/BENCHMARKS.md, "Web console"), and the figures are about
// the last hours or days; a small history is always read afresh.
const (
	topsTTL  = 30 * time.Second
	topsSlow = 100 * time.Millisecond
)

type tops struct {
	at                           time.Time
	countries, accounts, sources []audit.TopRow
}

// tops returns the period's top lists, from the cache when fresh.
func (s *Server) tops(ctx context.Context, key string, span time.Duration) (tops, error) {
	now := s.c.Now()
	s.mu.Lock()
	t, ok := s.topCache[key]
	s.mu.Unlock()
	if ok && now.Sub(t.at) < topsTTL && !now.Before(t.at) {
		return t, nil
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	since := now.Add(-span)
	t = tops{at: now}
	var err error
	if t.countries, err = s.c.Audit.Top(ctx, "countries", since, 300); err != nil {
		return tops{}, err
	}
	if t.accounts, err = s.c.Audit.Top(ctx, "accounts", since, 10); err != nil {
		return tops{}, err
	}
	if t.sources, err = s.c.Audit.Top(ctx, "sources", since, 10); err != nil {
		return tops{}, err
	}
	// Only slow answers are kept: a small history stays live.
	if s.c.Now().Sub(now) >= topsSlow || time.Since(start) >= topsSlow {
		s.mu.Lock()
		s.topCache[key] = t
		s.mu.Unlock()
	}
	return t, nil
}

// heat is the map's shade class for a number of failures.
func heat(n int64) string {
	switch {
	case n == 0:
		return "h0"
	case n < 10:
		return "h1"
	case n < 100:
		return "h2"
	case n < 1000:
		return "h3"
	}
	return "h4"
}

func (s *Server) countries(w http.ResponseWriter, r *http.Request, sess *session) {
	key, span := parseSpan(r.URL.Query().Get("span"), "24h")
	d := countriesData{Span: key, Spans: spans, MapHeight: mapHeight}
	for _, sp := range spans {
		if sp.Key == key {
			d.SpanLabel = sp.Label
		}
	}
	byCode := map[string]int64{}
	if s.c.Audit == nil {
		d.NoAudit = true
	} else {
		t, err := s.tops(r.Context(), key, span)
		if err != nil {
			s.c.Log.Error("console: audit query failed", "err", err)
			d.Err = "The login history could not be read; see mailgate's log."
		}
		d.Accounts, d.Sources, d.AsOf = t.accounts, t.sources, t.at
		for _, row := range t.countries {
			d.Rows = append(d.Rows, countryRow{row, geo.CountryName(row.Key)})
			byCode[row.Key] = row.Failures
			d.Total += row.Failures
		}
	}
	for _, sh := range worldShapes {
		n := byCode[sh.Code]
		d.Shapes = append(d.Shapes, mapShape{Code: sh.Code, Name: geo.CountryName(sh.Code), Path: sh.Path, Failures: n, Class: heat(n)})
	}
	s.render(w, r, "countries", sess, http.StatusOK, "Failed and denied logins by country", "", d)
}

// parseSpan reads ?span=1h|24h|7d; anything else is def.
func parseSpan(k, def string) (string, time.Duration) {
	switch k {
	case "1h":
		return k, time.Hour
	case "24h":
		return k, 24 * time.Hour
	case "7d":
		return k, 7 * 24 * time.Hour
	}
	return parseSpan(def, "24h")
}

// ---- an account's login history ----

type accountData struct {
	User    string
	Account string
	Span    string
	Spans   []struct{ Key, Label string }
	NoAudit bool
	Asked   bool
	Rows    []audit.Row
}

func (s *Server) account(w http.ResponseWriter, r *http.Request, sess *session) {
	q := r.URL.Query()
	key, span := parseSpan(q.Get("span"), "7d")
	d := accountData{User: q.Get("user"), Span: key, Spans: spans, NoAudit: s.c.Audit == nil}
	errMsg := ""
	code := http.StatusOK
	switch {
	case d.User == "" || d.NoAudit:
	case len(d.User) > maxLogin || strings.ContainsFunc(d.User, func(c rune) bool { return !unicode.IsPrint(c) }):
		errMsg, code = fmt.Sprintf("User: at most %d printable characters.", maxLogin), http.StatusBadRequest
	default:
		d.Asked = true
		d.Account = d.User
		if s.c.NormalizeAccount != nil {
			d.Account = s.c.NormalizeAccount(d.User)
		}
		ctx, cancel := context.WithTimeout(r.Context(), queryTimeout)
		defer cancel()
		rows, err := s.c.Audit.History(ctx, audit.Query{Account: d.Account, Since: s.c.Now().Add(-span), Limit: 500})
		if err != nil {
			s.c.Log.Error("console: audit query failed", "err", err)
			errMsg = "The login history could not be read; see mailgate's log."
		}
		d.Rows = rows
	}
	s.render(w, r, "account", sess, code, "Login history", errMsg, d)
}

// ---- policy test ----

type policyData struct {
	User, Addr, Proto string
	Protos            []string
	NoPolicy          bool
	Asked             bool
	Decision          policy.Decision
	Where             string
}

func (s *Server) policyTest(w http.ResponseWriter, r *http.Request, sess *session) {
	q := r.URL.Query()
	d := policyData{User: q.Get("user"), Addr: q.Get("addr"), Proto: q.Get("proto"), Protos: []string{"imap", "pop3", "smtp"}, NoPolicy: s.c.Decide == nil}
	if d.Proto == "" {
		d.Proto = "imap"
	}
	errMsg, code := "", http.StatusOK
	if (d.User != "" || d.Addr != "") && !d.NoPolicy {
		p := policy.Protocol(d.Proto)
		addr, aerr := netip.ParseAddr(strings.TrimSpace(d.Addr))
		switch {
		case d.User == "" || len(d.User) > maxLogin || strings.ContainsFunc(d.User, func(c rune) bool { return !unicode.IsPrint(c) }):
			errMsg, code = fmt.Sprintf("User: 1 to %d printable characters.", maxLogin), http.StatusBadRequest
		case aerr != nil || addr.Zone() != "":
			errMsg, code = "Address: want one IPv4 or IPv6 address.", http.StatusBadRequest
		case p != policy.IMAP && p != policy.POP3 && p != policy.SMTP:
			errMsg, code = "Protocol: want imap, pop3 or smtp.", http.StatusBadRequest
		default:
			d.Asked = true
			d.Decision = s.c.Decide(policy.Request{Login: d.User, Protocol: p, Addr: addr.Unmap()})
			l := d.Decision.Location
			d.Where = l.Code()
			if d.Where == "" {
				d.Where = "unknown"
			}
			if l.Name != "" {
				d.Where += " (" + l.Name + ")"
			}
			if l.Source != "" {
				d.Where += ", source " + l.Source
			}
		}
	}
	s.render(w, r, "policy", sess, code, "Policy test", errMsg, d)
}

// ---- the admin action log ----

// actionsPerPage is how many actions one page of the log shows.
const actionsPerPage = 100

type actionsData struct {
	Lasting    bool // read from the audit database
	Rows       []Action
	Page       int // from 0
	Prev, Next int // page numbers of the links; -1: none
}

func (s *Server) actionLog(w http.ResponseWriter, r *http.Request, sess *session) {
	page, err := strconv.Atoi(r.URL.Query().Get("page"))
	if err != nil || page < 0 || page > 100000 {
		page = 0
	}
	d := actionsData{Page: page, Prev: page - 1, Next: -1}
	errMsg := ""
	var rows []Action
	if s.c.ActionLog != nil {
		ctx, cancel := context.WithTimeout(r.Context(), queryTimeout)
		defer cancel()
		rows, err = s.c.ActionLog.Actions(ctx, actionsPerPage+1, page*actionsPerPage)
		if err != nil {
			s.c.Log.Error("console: action log query failed", "err", err)
			errMsg = "The action log could not be read from the audit database; shown: the changes since mailgate started."
		} else {
			d.Lasting = true
		}
	}
	if !d.Lasting {
		s.mu.Lock()
		all := slices.Clone(s.actions)
		s.mu.Unlock()
		slices.Reverse(all)
		rows = all[min(len(all), page*actionsPerPage):]
	}
	if len(rows) > actionsPerPage {
		rows, d.Next = rows[:actionsPerPage], page+1
	}
	d.Rows = rows
	s.render(w, r, "actions", sess, http.StatusOK, "Action log", errMsg, d)
}

// ---- live sessions ----

// Live sessions are shown livePerPage at a time, filtered by a text
// that any of account, address, country, protocol, listener or session
// id contains: a gateway with 100,000 sessions must not render 100,000
// rows into every open tab every 2 seconds.
const (
	livePerPage = 100
	maxLiveQ    = 64
	maxLivePage = 100000
)

type sessionRow struct {
	Session
	Country string
	For     string
}

type sessionsData struct {
	Off   bool
	Rows  []sessionRow // this page's
	Total int          // sessions matching the filter
	Query string
	Page  int // from 0
	// First and Last number the rows shown (from 1); More counts the
	// matching sessions after this page.
	First, Last, More int
	// PrevURL and NextURL are the pages' links; "": none. Stream is the
	// event stream of this view.
	PrevURL, NextURL, Stream string
}

// sessionView is what one table shows: the filter, the page, the role.
type sessionView struct {
	q     string // lower case
	page  int
	admin bool
}

// parseSessionView reads ?q= and ?p=; false: unusable.
func parseSessionView(q, p string) (sessionView, bool) {
	v := sessionView{q: strings.ToLower(strings.TrimSpace(q))}
	if !printable(v.q, maxLiveQ) {
		return v, false
	}
	if p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || n > maxLivePage {
			return v, false
		}
		v.page = n
	}
	return v, true
}

// liveSessions is one snapshot of the logged-in sessions, oldest first,
// shared by every stream; views memoizes each view's rendered rows.
type liveSessions struct {
	off  bool
	rows []sessionRow

	mu    sync.Mutex
	views map[sessionView]string
}

// gatherSessions is one snapshot: the one call to Sessions and the
// country of each address.
func (s *Server) gatherSessions() *liveSessions {
	ls := &liveSessions{off: s.c.Sessions == nil, views: map[sessionView]string{}}
	if ls.off {
		return ls
	}
	now := s.c.Now()
	list := s.c.Sessions()
	ls.rows = make([]sessionRow, 0, len(list))
	for _, l := range list {
		row := sessionRow{Session: l, For: now.Sub(l.Since).Round(time.Second).String()}
		if s.c.Country != nil {
			row.Country = s.c.Country(l.Addr)
		}
		ls.rows = append(ls.rows, row)
	}
	return ls
}

func (r *sessionRow) matches(q string) bool {
	if q == "" {
		return true
	}
	for _, f := range []string{r.Account, r.Addr.String(), r.Country, r.Protocol, r.Listener, r.ID} {
		if strings.Contains(strings.ToLower(f), q) {
			return true
		}
	}
	return false
}

// data is the view's page of ls.
func (ls *liveSessions) data(v sessionView) sessionsData {
	d := sessionsData{Off: ls.off, Query: v.q, Page: v.page}
	if d.Off {
		return d
	}
	skip := v.page * livePerPage
	d.Rows, d.Total = pageRows(ls.rows, listView{v.q, v.page}, (*sessionRow).matches)
	if len(d.Rows) > 0 {
		d.First, d.Last = skip+1, skip+len(d.Rows)
	}
	d.More = max(0, d.Total-skip-len(d.Rows))
	link := func(page int) string {
		u := url.Values{}
		if v.q != "" {
			u.Set("q", v.q)
		}
		if page > 0 {
			u.Set("p", strconv.Itoa(page))
		}
		return Prefix + "sessions?" + u.Encode()
	}
	if v.page > 0 {
		d.PrevURL = link(min(v.page-1, max(0, (d.Total-1)/livePerPage)))
	}
	if d.More > 0 {
		d.NextURL = link(v.page + 1)
	}
	st := url.Values{"page": {"sessions"}}
	if v.q != "" {
		st.Set("q", v.q)
	}
	if v.page > 0 {
		st.Set("p", strconv.Itoa(v.page))
	}
	d.Stream = Prefix + "events?" + st.Encode()
	return d
}

func (s *Server) sessionsPage(w http.ResponseWriter, r *http.Request, sess *session) {
	s.renderSessions(w, r, sess, http.StatusOK, "")
}

func (s *Server) renderSessions(w http.ResponseWriter, r *http.Request, sess *session, code int, errMsg string) {
	q := r.URL.Query()
	v, ok := parseSessionView(q.Get("q"), q.Get("p"))
	if !ok && errMsg == "" {
		errMsg, code = fmt.Sprintf("Filter: at most %d printable characters; page: a number from 0.", maxLiveQ), http.StatusBadRequest
		v = sessionView{}
	}
	s.render(w, r, "sessions", sess, code, "Live sessions", errMsg, s.gatherSessions().data(v))
}

// liveRows is the "sessions" event's data for sess: the view's rows
// rendered by the page's own template, once per snapshot and view for
// every stream, with sess's form token put in.
func (s *Server) liveRows(ls *liveSessions, v sessionView, sess *session) (string, error) {
	v.admin = sess.role == roleAdmin
	ls.mu.Lock()
	html, ok := ls.views[v]
	ls.mu.Unlock()
	if !ok {
		// csrfMark stands for the token: random, so no session data can
		// spell it.
		d := pageData{Page: "sessions", Admin: v.admin, CSRF: s.csrfMark, Data: ls.data(v)}
		var b strings.Builder
		if err := s.pages["sessions"].ExecuteTemplate(&b, "rows", d); err != nil {
			return "", err
		}
		html = b.String()
		ls.mu.Lock()
		ls.views[v] = html
		ls.mu.Unlock()
	}
	if !v.admin {
		return html, nil
	}
	return strings.ReplaceAll(html, s.csrfMark, sess.csrf), nil
}

// maxSessionID bounds the disconnect form's id (proxy session ids are 12
// characters).
const maxSessionID = 32

func (s *Server) disconnect(w http.ResponseWriter, r *http.Request, sess *session) {
	id := r.PostFormValue("id")
	if s.c.Disconnect == nil || id == "" || len(id) > maxSessionID || !ValidUserName(id) {
		s.renderSessions(w, r, sess, http.StatusBadRequest, "Session: want a session id as listed.")
		return
	}
	var who string
	if s.c.Sessions != nil {
		for _, ls := range s.c.Sessions() {
			if ls.ID == id {
				who = fmt.Sprintf(" (%s from %s)", ls.Account, ls.Addr)
			}
		}
	}
	if !s.c.Disconnect(id) {
		s.renderSessions(w, r, sess, http.StatusNotFound, "No such session (it may have ended).")
		return
	}
	s.record(sess, r, "session disconnected: "+id+who)
	http.Redirect(w, r, Prefix+"sessions", http.StatusSeeOther)
}

// ---- per-user exceptions ----

type exceptionsData struct {
	Off    bool
	Rows   []exceptionRow
	Done   []string // what the last edit did
	Protos []string
	// The allow form's values, kept after an error.
	User, Target, Until, Proto, Note string
}

type exceptionRow struct {
	Exception
	Expired bool
}

// Exception form limits.
const (
	maxTarget = 64
	maxNote   = 200
)

func printable(s string, max int) bool {
	return len(s) <= max && !strings.ContainsFunc(s, func(c rune) bool { return !unicode.IsPrint(c) })
}

func (s *Server) renderExceptions(w http.ResponseWriter, r *http.Request, sess *session, code int, errMsg string, d exceptionsData) {
	d.Off = s.c.Exceptions == nil || s.c.Allow == nil || s.c.Revoke == nil
	d.Protos = []string{"imap", "pop3", "smtp"}
	if !d.Off {
		list, err := s.c.Exceptions()
		if err != nil {
			s.c.Log.Error("console: policy files unreadable", "err", err)
			if errMsg == "" {
				errMsg, code = "The policy files could not be read: "+err.Error(), http.StatusInternalServerError
			}
		}
		now := s.c.Now()
		for _, e := range list {
			d.Rows = append(d.Rows, exceptionRow{e, !e.Until.IsZero() && !now.Before(e.Until)})
		}
	}
	s.render(w, r, "exceptions", sess, code, "Per-user exceptions", errMsg, d)
}

func (s *Server) exceptionsPage(w http.ResponseWriter, r *http.Request, sess *session) {
	s.renderExceptions(w, r, sess, http.StatusOK, "", exceptionsData{})
}

func (s *Server) allowException(w http.ResponseWriter, r *http.Request, sess *session) {
	d := exceptionsData{User: strings.TrimSpace(r.PostFormValue("user")), Target: strings.TrimSpace(r.PostFormValue("target")),
		Until: strings.TrimSpace(r.PostFormValue("until")), Proto: r.PostFormValue("proto"), Note: strings.TrimSpace(r.PostFormValue("note"))}
	if s.c.Allow == nil {
		s.renderExceptions(w, r, sess, http.StatusConflict, "No policy files to edit.", d)
		return
	}
	bad := func(msg string) { s.renderExceptions(w, r, sess, http.StatusBadRequest, msg, d) }
	ch := policy.Change{User: d.User, Target: d.Target, Note: d.Note}
	switch {
	case d.User == "" || !printable(d.User, maxLogin):
		bad(fmt.Sprintf("User: a login, @domain or *, at most %d printable characters.", maxLogin))
		return
	case d.Target == "" || !printable(d.Target, maxTarget):
		bad("Place: a country code, address or network.")
		return
	case !printable(d.Note, maxNote):
		bad(fmt.Sprintf("Note: at most %d printable characters.", maxNote))
		return
	}
	switch d.Proto {
	case "":
	case "imap", "pop3", "smtp":
		ch.Protocols = []policy.Protocol{policy.Protocol(d.Proto)}
	default:
		bad("Protocol: imap, pop3, smtp or all.")
		return
	}
	if d.Until != "" {
		t, err := policy.ParseUntil(d.Until)
		if err != nil {
			bad("Until: " + err.Error())
			return
		}
		ch.Until = t
	}
	if ch.Note == "" {
		ch.Note = "console: " + sess.user
	} else {
		ch.Note += " (console: " + sess.user + ")"
	}
	done, err := s.c.Allow(ch)
	if err != nil {
		s.renderExceptions(w, r, sess, http.StatusBadRequest, err.Error(), d)
		return
	}
	what := fmt.Sprintf("exception added: %s from %s", ch.User, ch.Target)
	if !ch.Until.IsZero() {
		what += " until " + ch.Until.UTC().Format(time.RFC3339)
	}
	s.record(sess, r, what)
	s.renderExceptions(w, r, sess, http.StatusOK, "", exceptionsData{Done: done})
}

func (s *Server) revokeException(w http.ResponseWriter, r *http.Request, sess *session) {
	user, target := r.PostFormValue("user"), r.PostFormValue("target")
	if s.c.Revoke == nil || user == "" || target == "" || !printable(user, maxLogin) || !printable(target, maxTarget) {
		s.renderExceptions(w, r, sess, http.StatusBadRequest, "Revoke: want a user and a place as listed.", exceptionsData{})
		return
	}
	done, err := s.c.Revoke(policy.Change{User: user, Target: target})
	if err != nil {
		s.renderExceptions(w, r, sess, http.StatusBadRequest, err.Error(), exceptionsData{})
		return
	}
	s.record(sess, r, fmt.Sprintf("exception revoked: %s from %s", user, target))
	s.renderExceptions(w, r, sess, http.StatusOK, "", exceptionsData{Done: done})
}
