// Package console is mailgate's web console (issue #18): pages rendered
// on the server with html/template, every asset embedded, no JavaScript
// needed, served on the admin listener under Prefix.
//
// The console knows nothing of the gateway. It defines what it reads and
// changes as small interfaces and functions (Guard, Audit, Config.Decide,
// Config.Overview); package main hands it the real ones. It imports
// guard, audit, policy and geo for their types only.
//
// Security, in the order a request meets it:
//
//   - every response carries a strict Content-Security-Policy (only the
//     console's own script, no frames, forms only to the console) and
//     no-store; the one script only updates the overview's live figures and the
//     live sessions table from the event stream; every page works without it;
//   - a request that changes anything (POST) passes Go's
//     http.CrossOriginProtection (Sec-Fetch-Site, else Origin against
//     Host) and then, behind sign-in, the session's form token;
//   - sign-in: accounts in admin.console.users_file (user:role:bcrypt),
//     each attempt through the brute-force guard like a mail login (a
//     banned address or a locked account gets the wrong-password answer,
//     padded to the same failure delay); a session is a random 256-bit
//     cookie (HttpOnly, SameSite=Strict, Secure over TLS) that ends after
//     IdleTimeout without a request or MaxAge after sign-in;
//   - roles: a viewer reads, an admin also changes (bans, unlocks). The
//     forms are absent for a viewer, and the handlers refuse them. A
//     reload (ReloadUsers) applies a changed role or a removed account
//     to the open sessions at once.
package console

import (
	"context"
	"embed"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailgate/mailgate/audit"
	"github.com/mailgate/mailgate/guard"
	"github.com/mailgate/mailgate/policy"
)

// Prefix is where the console is mounted on the admin listener.
const Prefix = "/console/"

// Defaults.
const (
	DefaultIdleTimeout = 30 * time.Minute
	// MaxAge ends a session this long after sign-in, whatever its use.
	MaxAge = 12 * time.Hour
	// maxSessions bounds the session table; only correct passwords make
	// sessions, so this is about forgotten browser tabs.
	maxSessions = 1000
	// maxActions is how many admin actions the action log keeps.
	maxActions = 500
	// queryTimeout bounds each audit query a page makes.
	queryTimeout = 10 * time.Second
)

// Guard is what the console asks of the brute-force guard: its bans and
// lockouts, and the attempt handle every sign-in goes through.
// *guard.Guard implements it.
type Guard interface {
	Bans() []guard.Ban
	AddBan(prefix netip.Prefix, d time.Duration, reason string) (guard.Ban, error)
	RemoveBan(prefix netip.Prefix) bool
	Lockouts() []guard.Lockout
	Unlock(login string) bool
	Attempt(login string, addr netip.Addr, password string) *guard.Attempt
	FailureDelay(addr netip.Addr, base time.Duration) time.Duration
}

// Audit is what the console reads from the login history.
// *audit.Store implements it.
type Audit interface {
	Top(ctx context.Context, by string, since time.Time, limit int) ([]audit.TopRow, error)
	History(ctx context.Context, q audit.Query) ([]audit.Row, error)
}

// ActionLog is where the admin action log lasts. *audit.Store
// implements it.
type ActionLog interface {
	AddAction(ctx context.Context, a audit.Action) error
	// Actions returns at most limit actions, newest first, after skipping
	// offset.
	Actions(ctx context.Context, limit, offset int) ([]audit.Action, error)
}

// Overview is what the overview page shows of the running gateway.
type Overview struct {
	Started  time.Time
	Sessions int // open connections
	// Logins counts login attempts since start by result (pass,
	// authfailed, authlocked, countryfailed, unavailable).
	Logins map[string]float64
	// Decisions counts policy decisions since start by "result rule".
	Decisions map[string]float64
	// Reload is the last configuration load (start-up or reload).
	ReloadAt  time.Time
	ReloadErr string // "" when it succeeded
	Geo       []GeoDB
	Certs     []Cert
}

// GeoDB is one loaded geo database.
type GeoDB struct {
	Name, Type string
	Built      time.Time // zero when the database states none
}

// Cert is one served certificate.
type Cert struct {
	Name     string
	NotAfter time.Time
}

// Config is what a console serves.
type Config struct {
	// UsersFile holds the console accounts (ParseUsers); it is read at
	// each sign-in, so `mailgate admin passwd` takes effect at once, and
	// by ReloadUsers, which applies it to the open sessions.
	UsersFile string
	// IdleTimeout ends a session without requests; 0: DefaultIdleTimeout.
	IdleTimeout time.Duration
	// FailureDelay is the least time a refused sign-in takes (the mail
	// logins' limits.auth_failure_delay); the guard adds its penalty.
	FailureDelay time.Duration
	Log          *slog.Logger
	// Guard: nil means no guard (sign-ins are not counted; no bans page
	// actions).
	Guard Guard
	// Audit: nil means no login history (the pages say so).
	Audit Audit
	// ActionLog keeps the admin action log lasting (the audit database);
	// nil: the last maxActions actions in memory, lost at restart.
	ActionLog ActionLog
	// NormalizeAccount makes the audit's account key from a login as
	// typed; nil: unchanged.
	NormalizeAccount func(login string) string
	// Decide asks the current policy; nil: no policy test page.
	Decide func(policy.Request) policy.Decision
	// Overview reads the gateway's state; nil: an empty overview.
	Overview func() Overview
	// Sessions lists the logged-in sessions and Disconnect closes one by
	// id; nil: no live sessions page.
	Sessions   func() []Session
	Disconnect func(id string) bool
	// Country places an address (ISO code or a geo label); nil: none.
	Country func(netip.Addr) string
	// Exceptions lists the allow entries of the policy files; Allow and
	// Revoke make the edits of `mailgate allow` and `revoke` and reload
	// the policy, returning what they did, one line each. nil: no
	// exceptions page.
	Exceptions func() ([]Exception, error)
	Allow      func(policy.Change) ([]string, error)
	Revoke     func(policy.Change) ([]string, error)
	// Now is the clock; nil: time.Now.
	Now func() time.Time
}

//go:embed templates/*.html static/*
var assets embed.FS

// Server serves the console.
type Server struct {
	c     Config
	pages map[string]*template.Template
	css   []byte
	js    []byte
	// streams counts the open event streams (maxStreams at most).
	streams     atomic.Int32
	bcryptSlots chan struct{} // bounds concurrent password checks

	mu       sync.Mutex
	sessions map[string]*session // by sessionKey(cookie value)
	// usersGen counts the users-file reloads applied (ReloadUsers) and
	// roles is the last one's accounts: newSession checks a sign-in
	// that read the file before a reload against them.
	usersGen uint64
	roles    map[string]role
	actions  []Action        // newest last, at most maxActions
	topCache map[string]tops // the country page's figures by period

	rate rateMeter

	// One producer per live page kind, shared by every open stream
	// (feed.go).
	overviewFeed *feed[string]
	liveFeed     *feed[*liveSessions]
	// afterUsersRead, when set (tests), runs in a sign-in between its
	// read of the users file and its password check.
	afterUsersRead func()
	// csrfMark stands for the form token in live rows rendered once
	// for every admin's stream.
	csrfMark string
}

// New returns a console for c.
func New(c Config) *Server {
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	css, err := fs.ReadFile(assets, "static/console.css")
	if err != nil {
		panic(err) // embedded at build time
	}
	js, err := fs.ReadFile(assets, "static/console.js")
	if err != nil {
		panic(err)
	}
	s := &Server{
		c:           c,
		pages:       parsePages(),
		css:         css,
		js:          js,
		bcryptSlots: make(chan struct{}, 2),
		sessions:    map[string]*session{},
		topCache:    map[string]tops{},
		csrfMark:    randomToken(),
	}
	s.overviewFeed = newFeed(eventEvery, s.overviewEvent, c.Log)
	s.liveFeed = newFeed(eventEvery, s.gatherSessions, c.Log)
	return s
}

// Handler serves every console path under Prefix.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /console/static/console.css", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/css; charset=utf-8")
		w.Header().Set("Cache-Control", "max-age=3600")
		_, _ = w.Write(s.css)
	})
	mux.HandleFunc("GET /console/static/console.js", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		w.Header().Set("Cache-Control", "max-age=3600")
		_, _ = w.Write(s.js)
	})
	mux.HandleFunc("GET /console/login", s.loginForm)
	mux.Handle("GET /console/events", s.signedIn(roleViewer, s.events))
	mux.HandleFunc("POST /console/login", s.signIn)
	mux.Handle("POST /console/logout", s.signedIn(roleViewer, s.signOut))
	mux.Handle("GET /console/{$}", s.signedIn(roleViewer, s.overview))
	mux.Handle("GET /console/bans", s.signedIn(roleViewer, s.bans))
	mux.Handle("POST /console/bans/add", s.signedIn(roleAdmin, s.addBan))
	mux.Handle("POST /console/bans/remove", s.signedIn(roleAdmin, s.removeBan))
	mux.Handle("POST /console/lockouts/unlock", s.signedIn(roleAdmin, s.unlock))
	mux.Handle("GET /console/countries", s.signedIn(roleViewer, s.countries))
	mux.Handle("GET /console/account", s.signedIn(roleViewer, s.account))
	mux.Handle("GET /console/policy", s.signedIn(roleViewer, s.policyTest))
	mux.Handle("GET /console/actions", s.signedIn(roleViewer, s.actionLog))
	mux.Handle("GET /console/sessions", s.signedIn(roleViewer, s.sessionsPage))
	mux.Handle("GET /console/exceptions", s.signedIn(roleViewer, s.exceptionsPage))
	mux.Handle("POST /console/exceptions/allow", s.signedIn(roleAdmin, s.allowException))
	mux.Handle("POST /console/exceptions/revoke", s.signedIn(roleAdmin, s.revokeException))
	mux.Handle("POST /console/sessions/disconnect", s.signedIn(roleAdmin, s.disconnect))
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.c.Log.Warn("console: cross-origin request refused", "method", r.Method, "path", r.URL.EscapedPath(), "remote", r.RemoteAddr)
		s.errorPage(w, r, nil, http.StatusForbidden, "Refused: this request did not come from a console page.")
	}))
	return securityHeaders(cop.Handler(mux))
}

// securityHeaders: no script, no framing, forms only to the console, no
// caching of pages that name accounts and addresses.
func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; script-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Cache-Control", "no-store")
		h.ServeHTTP(w, r)
	})
}

// Run samples the login counter for the logins-per-minute figure until
// ctx ends.
func (s *Server) Run(ctx context.Context) {
	t := time.NewTicker(rateSampleEvery)
	defer t.Stop()
	for {
		s.sample()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Server) sample() {
	if s.c.Overview == nil {
		return
	}
	var total float64
	for _, n := range s.c.Overview().Logins {
		total += n
	}
	s.rate.add(s.c.Now(), total)
}

// Session is one logged-in mail session.
type Session struct {
	ID                string
	Account           string
	Addr              netip.Addr
	Protocol          string
	Listener          string
	Since             time.Time
	BytesIn, BytesOut int64
}

// Exception is one allow entry of the policy files: a user let in from
// a place, perhaps only for some protocols or until a time.
type Exception struct {
	User      string
	Target    string
	Protocols []string
	Until     time.Time // zero: no end
	Note      string
	Where     string // file:line
}

// Action is one change made through the console: Time, User (the
// console account), Remote (its address), What ("ban added:
// 192.0.2.0/24 for 1h (reason)").
type Action = audit.Action

// actionWrite bounds the wait for the action log's database write: the
// audit store's one connection may be busy with a batch of login rows.
const actionWrite = 2 * time.Second

// record logs an admin action and keeps it for the action log page: in
// the ActionLog when there is one, and in memory (the page's fallback
// when the database cannot be read).
func (s *Server) record(sess *session, r *http.Request, what string) {
	a := Action{Time: s.c.Now(), User: sess.user, Remote: remoteAddr(r).String(), What: what}
	s.c.Log.Info("console: admin action", "console_user", a.User, "remote", a.Remote, "action", what)
	if s.c.ActionLog != nil {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), actionWrite)
		if err := s.c.ActionLog.AddAction(ctx, a); err != nil {
			s.c.Log.Error("console: action log write failed (the log line above is the record)", "err", err)
		}
		cancel()
	}
	s.mu.Lock()
	s.actions = append(s.actions, a)
	if len(s.actions) > maxActions {
		s.actions = append(s.actions[:0:0], s.actions[len(s.actions)-maxActions:]...)
	}
	s.mu.Unlock()
}
