package console

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/mailgate/mailgate/guard"
)

// Roles.
const (
	RoleViewer = "viewer" // reads every page
	RoleAdmin  = "admin"  // also lifts and adds bans, unlocks logins
)

type role int

const (
	roleViewer role = iota
	roleAdmin
)

// Limits of the users file and the sign-in form.
const (
	// MaxUserLen bounds a console account name.
	MaxUserLen = 64
	// MaxPasswordLen is bcrypt's limit: it reads 72 bytes, and a longer
	// password would be silently cut.
	MaxPasswordLen = 72
	// BcryptCost is what `mailgate admin passwd` uses: about 0.25 s on
	// a current core, each sign-in's cost; the guard bounds the rate.
	BcryptCost = 12
	// MaxBcryptCost: at 17 one sign-in takes about 8 s of a core, as far
	// as htpasswd -B goes; beyond, sign-ins would outlast the browser.
	MaxBcryptCost = 17
	// maxUsersFile bounds the users file read at each sign-in.
	maxUsersFile = 1 << 20
	// cookieName is the session cookie.
	cookieName = "mailgate_console"
)

// User is one console account.
type User struct {
	Name string
	Role string // RoleViewer or RoleAdmin
	Hash string // bcrypt
}

// ValidUserName reports whether name can be a console account: 1 to
// MaxUserLen of letters, digits and . _ @ -. Nothing else ever reaches
// a log line or the guard.
func ValidUserName(name string) bool {
	if name == "" || len(name) > MaxUserLen {
		return false
	}
	for _, c := range []byte(name) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '@', c == '-':
		default:
			return false
		}
	}
	return true
}

// ParseUsers reads a users file: one "user:role:hash" line per account,
// blank lines and lines starting with # ignored. Every problem is
// reported with its line number; an account named twice is an error.
func ParseUsers(data []byte) ([]User, error) {
	var out []User
	var errs []error
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 512), 4096)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, rest, ok1 := strings.Cut(line, ":")
		r, hash, ok2 := strings.Cut(rest, ":")
		switch {
		case !ok1 || !ok2:
			errs = append(errs, fmt.Errorf("line %d: want user:role:hash", n))
			continue
		case !ValidUserName(name):
			errs = append(errs, fmt.Errorf("line %d: user name must be 1 to %d letters, digits, '.', '_', '@' or '-'", n, MaxUserLen))
			continue
		case r != RoleViewer && r != RoleAdmin:
			errs = append(errs, fmt.Errorf("line %d: role %q is not viewer or admin", n, r))
			continue
		}
		if c, err := bcrypt.Cost([]byte(hash)); err != nil {
			errs = append(errs, fmt.Errorf("line %d: not a bcrypt hash (make it with mailgate admin passwd)", n))
			continue
		} else if c > MaxBcryptCost {
			errs = append(errs, fmt.Errorf("line %d: bcrypt cost %d is above %d: a sign-in would take minutes", n, c, MaxBcryptCost))
			continue
		}
		if seen[name] {
			errs = append(errs, fmt.Errorf("line %d: user %s named twice", n, name))
			continue
		}
		seen[name] = true
		out = append(out, User{Name: name, Role: r, Hash: hash})
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, fmt.Errorf("line %d: %v", n+1, err))
	}
	return out, errors.Join(errs...)
}

// ReadUsers reads and parses a users file.
func ReadUsers(path string) ([]User, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := readLimited(f, maxUsersFile)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	u, err := ParseUsers(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return u, nil
}

func readLimited(f *os.File, max int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("larger than %d bytes", max)
	}
	return data, nil
}

// dummyHashes are compared against when the account does not exist, so
// an unknown name costs what a wrong password costs: one per bcrypt
// cost, made at the first sign-in that needs it, not at start. Made
// under dummyMu, so a burst of unknown names right after start makes it
// once, as the bcrypt slots bound the checks.
var (
	dummyMu     sync.Mutex
	dummyHashes = map[int][]byte{}
)

// dummyHash is the dummy hash at the highest cost in users (BcryptCost
// when there are none), so that an unknown name takes as long as the
// slowest known account.
func dummyHash(users []User) []byte {
	cost := 0
	for _, u := range users {
		if c, err := bcrypt.Cost([]byte(u.Hash)); err == nil && c > cost {
			cost = c
		}
	}
	if cost == 0 {
		cost = BcryptCost
	}
	dummyMu.Lock()
	defer dummyMu.Unlock()
	if h, ok := dummyHashes[cost]; ok {
		return h
	}
	h, err := bcrypt.GenerateFromPassword([]byte("no such console account"), cost)
	if err != nil {
		panic(err) // only for a cost out of range, which ReadUsers refuses
	}
	dummyHashes[cost] = h
	return h
}

// session is one signed-in browser. Its fields do not change once it is
// in the table, except last (under Server.mu); a reload that changes the
// account's role puts a new session in its place (ReloadUsers).
type session struct {
	user    string
	role    role
	csrf    string // the form token
	created time.Time
	last    time.Time
	// gone is closed when the session leaves the table: ended, or
	// replaced by ReloadUsers. An open event stream waits on it.
	gone chan struct{}
}

// dropLocked removes the session under key and wakes its streams; the
// caller holds s.mu.
func (s *Server) dropLocked(key string) {
	if sess := s.sessions[key]; sess != nil {
		close(sess.gone)
		delete(s.sessions, key)
	}
}

// sessionKey is the table key of a cookie value: a hash, so the table
// holds nothing a cookie could be made from.
func sessionKey(cookie string) string {
	h := sha256.Sum256([]byte(cookie))
	return string(h[:])
}

func randomToken() string {
	var b [32]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// current returns the request's live session, or nil.
func (s *Server) current(r *http.Request) *session {
	ck, err := r.Cookie(cookieName)
	if err != nil || len(ck.Value) != 43 {
		return nil
	}
	return s.currentByValue(ck.Value)
}

// currentByValue returns the live session of a cookie value, or nil; a
// request counts as activity.
func (s *Server) currentByValue(value string) *session { return s.lookup(value, true) }

// lookup returns the live session of a cookie value, or nil, and counts
// the call as the user's activity when touch is set. An open event
// stream asks without touch: an unattended tab must not keep a session
// past its idle timeout.
func (s *Server) lookup(value string, touch bool) *session {
	key := sessionKey(value)
	now := s.c.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	sess := s.sessions[key]
	if sess == nil {
		return nil
	}
	if now.Sub(sess.last) > s.c.IdleTimeout || now.Sub(sess.created) > MaxAge {
		s.dropLocked(key)
		return nil
	}
	if touch {
		sess.last = now
	}
	return sess
}

// newSession stores a session for user and returns its cookie value.
// gen is the users generation (usersGeneration) from before u was read
// from the file: when a reload has applied the file since, the sign-in
// takes the role that reload found, and an account it did not find gets
// no session (false), so a sign-in that raced a reload cannot keep what
// the reload took away.
func (s *Server) newSession(u User, gen uint64) (string, *session, bool) {
	value := randomToken()
	now := s.c.Now()
	sess := &session{user: u.Name, role: roleOf(u.Role), csrf: randomToken(), created: now, last: now, gone: make(chan struct{})}
	s.mu.Lock()
	defer s.mu.Unlock()
	if gen != s.usersGen {
		r, ok := s.roles[u.Name]
		if !ok {
			return "", nil, false
		}
		sess.role = r
	}
	if len(s.sessions) >= maxSessions {
		// Drop expired sessions, then the least recently used one.
		var oldest string
		for k, v := range s.sessions {
			if now.Sub(v.last) > s.c.IdleTimeout || now.Sub(v.created) > MaxAge {
				s.dropLocked(k)
			} else if oldest == "" || v.last.Before(s.sessions[oldest].last) {
				oldest = k
			}
		}
		if len(s.sessions) >= maxSessions {
			s.dropLocked(oldest)
		}
	}
	s.sessions[sessionKey(value)] = sess
	return value, sess, true
}

// usersGeneration returns the count of users-file reloads applied so far.
func (s *Server) usersGeneration() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.usersGen
}

func roleOf(r string) role {
	if r == RoleAdmin {
		return roleAdmin
	}
	return roleViewer
}

// ReloadUsers reads the users file again and applies it to the open
// sessions at once: a session of an account no longer in the file ends,
// and one whose account changed role has the new role from its next
// request on (an admin demoted to viewer can change nothing more). A
// file that cannot be read or parsed changes nothing: the sessions and
// the accounts of the last good read stay (a file caught half rewritten
// must not sign every admin out), the error is logged and returned, and
// sign-ins stay refused until the file reads again. Each ended or
// changed session is logged.
func (s *Server) ReloadUsers() error {
	users, err := ReadUsers(s.c.UsersFile)
	if err != nil {
		s.c.Log.Error("console: users file unreadable on reload; console sessions and accounts kept", "err", err)
		return err
	}
	roles := map[string]role{}
	for _, u := range users {
		roles[u.Name] = roleOf(u.Role)
	}
	var ended, changed []string
	s.mu.Lock()
	s.usersGen++
	s.roles = roles
	for k, sess := range s.sessions {
		r, ok := roles[sess.user]
		switch {
		case !ok:
			ended = append(ended, sess.user)
			s.dropLocked(k)
		case r != sess.role:
			changed = append(changed, sess.user)
			ns := *sess
			ns.role, ns.gone = r, make(chan struct{})
			close(sess.gone)
			s.sessions[k] = &ns
		}
	}
	s.mu.Unlock()
	for _, u := range ended {
		s.c.Log.Info("console: session ended, account removed from the users file", "console_user", u)
	}
	for _, u := range changed {
		s.c.Log.Info("console: session's role changed by the users file", "console_user", u, "role", roles[u].String())
	}
	return nil
}

func (r role) String() string {
	if r == roleAdmin {
		return RoleAdmin
	}
	return RoleViewer
}

func (s *Server) setCookie(w http.ResponseWriter, r *http.Request, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name:     cookieName,
		Value:    value,
		Path:     Prefix,
		MaxAge:   maxAge,
		HttpOnly: true,
		Secure:   r.TLS != nil,
		SameSite: http.SameSiteStrictMode,
	})
}

// signedIn wraps a page: without a session, GET goes to the sign-in form
// and anything else is refused; below the role, 403; a POST must carry
// the session's form token.
func (s *Server) signedIn(min role, h func(http.ResponseWriter, *http.Request, *session)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sess := s.current(r)
		if sess == nil {
			if r.Method == http.MethodGet {
				http.Redirect(w, r, Prefix+"login", http.StatusSeeOther)
				return
			}
			s.errorPage(w, r, nil, http.StatusForbidden, "Refused: you are not signed in.")
			return
		}
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
			tok := r.PostFormValue("csrf")
			if subtle.ConstantTimeCompare([]byte(tok), []byte(sess.csrf)) != 1 {
				s.c.Log.Warn("console: form without this session's token refused", "console_user", sess.user, "path", r.URL.EscapedPath(), "remote", r.RemoteAddr)
				s.errorPage(w, r, sess, http.StatusForbidden, "Refused: the form is out of date. Reload the page and try again.")
				return
			}
		}
		if sess.role < min {
			s.c.Log.Warn("console: change refused to a viewer", "console_user", sess.user, "path", r.URL.EscapedPath(), "remote", r.RemoteAddr)
			s.errorPage(w, r, sess, http.StatusForbidden, "Refused: your console role (viewer) may not change anything.")
			return
		}
		h(w, r, sess)
	})
}

// remoteAddr is the request's client address (the admin listener takes
// no forwarding headers).
func remoteAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// signInFailed is the one answer to every refused sign-in: wrong name,
// wrong password, banned address, locked account, unreadable users file.
const signInFailed = "Sign-in failed: wrong user name or password."

func (s *Server) loginForm(w http.ResponseWriter, r *http.Request) {
	if s.current(r) != nil {
		http.Redirect(w, r, Prefix, http.StatusSeeOther)
		return
	}
	s.render(w, r, "login", nil, http.StatusOK, "Sign in", "", nil)
}

func (s *Server) signIn(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	name, password := r.PostFormValue("user"), r.PostFormValue("password")
	addr := remoteAddr(r)
	start := time.Now()
	var delay time.Duration
	if s.c.Guard != nil {
		delay = s.c.Guard.FailureDelay(addr, s.c.FailureDelay)
	} else {
		delay = s.c.FailureDelay
	}
	u, gen, ok := s.judge(r.Context(), name, password, addr)
	var value string
	if ok {
		if value, _, ok = s.newSession(u, gen); !ok {
			// The password was right, but a reload removed the account
			// while it was checked: refused like a wrong password.
			s.c.Log.Warn("console: sign-in refused", "console_user", u.Name, "remote", addr.String(), "reason", "account removed from the users file during the sign-in")
		}
	}
	if !ok {
		// Every refusal ends at the same time: the failure delay from
		// the start, whatever was refused and how fast.
		if rest := delay - time.Since(start); rest > 0 {
			t := time.NewTimer(rest)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
			}
		}
		s.render(w, r, "login", nil, http.StatusOK, "Sign in", signInFailed, nil)
		return
	}
	s.setCookie(w, r, value, int(MaxAge/time.Second))
	s.c.Log.Info("console: signed in", "console_user", u.Name, "role", u.Role, "remote", addr.String())
	http.Redirect(w, r, Prefix, http.StatusSeeOther)
}

// judge checks one sign-in through the guard and the users file; it
// returns the users generation from before the file was read, for
// newSession.
func (s *Server) judge(ctx context.Context, name, password string, addr netip.Addr) (User, uint64, bool) {
	var a *guard.Attempt
	valid := ValidUserName(name)
	// The guard keys console accounts apart from mail logins
	// (guard.ConsoleLogin): no mail login can lock a console account.
	key := guard.ConsoleLogin("?") // no account has this name
	if valid {
		key = guard.ConsoleLogin(name)
	}
	if s.c.Guard != nil {
		a = s.c.Guard.Attempt(key, addr, password)
	}
	logName := name
	if !valid {
		logName = "" // client bytes that are not a name never reach the log
	}
	refuse := func(o guard.Outcome, why string) (User, uint64, bool) {
		for _, e := range a.Finish(o, "") {
			e.Log(ctx, s.c.Log)
		}
		s.c.Log.Warn("console: sign-in refused", "console_user", logName, "remote", addr.String(), "reason", why)
		return User{}, 0, false
	}
	if !valid || password == "" || len(password) > MaxPasswordLen || strings.ContainsAny(password, "\x00\r\n") {
		return refuse(guard.Refused, "unusable user name or password")
	}
	v := a.Begin(ctx)
	if v.Delay > 0 {
		t := time.NewTimer(v.Delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return refuse(guard.Abandoned, "client left")
		}
	}
	if !v.Allow {
		return refuse(guard.Refused, "guard: "+v.Reason)
	}
	gen := s.usersGeneration()
	users, err := ReadUsers(s.c.UsersFile)
	if err != nil {
		s.c.Log.Error("console: users file unreadable; nobody can sign in", "err", err)
		return refuse(guard.Abandoned, "users file unreadable")
	}
	if s.afterUsersRead != nil {
		s.afterUsersRead()
	}
	var found User
	for _, u := range users {
		if u.Name == name {
			found = u
		}
	}
	hash := dummyHash(users)
	if found.Name != "" {
		hash = []byte(found.Hash)
	}
	// At most two password checks at once: each is a quarter second of a
	// core, and mail logins share the machine.
	select {
	case s.bcryptSlots <- struct{}{}:
	case <-ctx.Done():
		return refuse(guard.Abandoned, "client left")
	}
	err = bcrypt.CompareHashAndPassword(hash, []byte(password))
	<-s.bcryptSlots
	if err != nil || found.Name == "" {
		return refuse(guard.WrongPassword, "wrong user name or password")
	}
	for _, e := range a.Finish(guard.Passed, "") {
		e.Log(ctx, s.c.Log)
	}
	return found, gen, true
}

func (s *Server) signOut(w http.ResponseWriter, r *http.Request, sess *session) {
	if ck, err := r.Cookie(cookieName); err == nil {
		s.mu.Lock()
		s.dropLocked(sessionKey(ck.Value))
		s.mu.Unlock()
	}
	s.setCookie(w, r, "", -1)
	s.c.Log.Info("console: signed out", "console_user", sess.user, "remote", remoteAddr(r).String())
	http.Redirect(w, r, Prefix+"login", http.StatusSeeOther)
}

// rateMeter keeps recent samples of the login counter.
type rateMeter struct {
	mu      sync.Mutex
	samples []rateSample // oldest first, the last few minutes
}

type rateSample struct {
	at    time.Time
	total float64
}

const rateSampleEvery = 10 * time.Second

func (m *rateMeter) add(at time.Time, total float64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.samples = append(m.samples, rateSample{at, total})
	// Keep five minutes.
	i := 0
	for i < len(m.samples)-1 && at.Sub(m.samples[i].at) > 5*time.Minute {
		i++
	}
	m.samples = m.samples[i:]
}

// perMinute is the login rate over the last minute or so, and false
// until a minute of samples exists.
func (m *rateMeter) perMinute(now time.Time, total float64) (float64, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	// The newest sample at least a minute old.
	for i := len(m.samples) - 1; i >= 0; i-- {
		sm := m.samples[i]
		if d := now.Sub(sm.at); d >= time.Minute {
			return (total - sm.total) / d.Minutes(), true
		}
	}
	return 0, false
}
