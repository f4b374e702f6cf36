// Package admin is mailgate's admin HTTP listener: /metrics (Prometheus),
// /healthz (the process serves), /readyz (backends reachable, certificates
// present), POST /reload (like SIGHUP) and the brute-force guard's API
// under /guard/ (bans, lockouts, unlock), plus the client the CLI uses
// for that API. It listens on loopback by default; metrics name
// countries and rules, nothing for the internet.
//
// Every protected path (POST /reload, everything under /guard/) passes one
// token check and gets one answer without a good token: 401 with
// "WWW-Authenticate: Bearer", whether the token is missing, wrong, or no
// admin.token_file is configured at all. Refusals are logged as a WARN at
// most once per RefusalLogInterval.
//
// The web console (package console), when configured, is mounted under
// ConsolePrefix with its own sign-in; it never accepts the token, and the
// token paths never accept its cookie. With TLSConfig the listener
// serves HTTPS.
//
// The package knows nothing of the gateway: package main hands it the
// metrics registry and functions that reload and check readiness.
package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"github.com/mailgate/mailgate/internal/errlist"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mailgate/mailgate/guard"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

const (
	// ReadyCacheTTL: /readyz probes at most this often, so a scrape
	// storm cannot become a connection storm on Dovecot.
	ReadyCacheTTL = 5 * time.Second
	// ReadyDialTimeout bounds each backend probe; a backend slower than
	// this to accept is not ready for logins either.
	ReadyDialTimeout = 2 * time.Second
	// RefusalLogInterval: requests with a bad or missing token are
	// logged at most this often (with the count of the ones not logged),
	// so a script hammering the port cannot fill the log.
	RefusalLogInterval = 10 * time.Second
	// GuardPrefix is where the guard's API is mounted.
	GuardPrefix = "/guard"
	// Admin HTTP bounds, as for any server reachable by a local user.
	readHeaderTimeout = 5 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = 60 * time.Second
	maxHeaderBytes    = 8 << 10
	// minTokenLen: a shorter token is refused at start.
	minTokenLen = 16
)

// Config is what the admin listener serves.
type Config struct {
	// Token is the bearer token of the protected paths; "" refuses every
	// request to them.
	Token string
	// Log gets the listener's own lines (refusals, reloads, errors).
	Log *slog.Logger
	// Metrics is served on /metrics.
	Metrics prometheus.Gatherer
	// Reload runs POST /reload; each part of a joined error is one line
	// of the reply. nil: no /reload.
	Reload func() error
	// Ready lists what is not ready (CheckReady); /readyz caches it for
	// ReadyCacheTTL.
	Ready func(ctx context.Context) []string
	// Guard is served under GuardPrefix; nil: no guard API.
	Guard *guard.Guard
	// Console is the web console, served under ConsolePrefix with its
	// own sign-in (no bearer token); nil: none.
	Console http.Handler
	// TLSConfig, when set, serves the listener over TLS.
	TLSConfig *tls.Config
}

// ConsolePrefix is where Config.Console is mounted (console.Prefix).
const ConsolePrefix = "/console/"

// Server serves the admin endpoints.
type Server struct {
	c Config

	mu        sync.Mutex // guards the readiness cache
	readyAt   time.Time
	readyErrs []string

	refusedMu    sync.Mutex // guards the two below
	refusedLog   time.Time  // when the last refusal was logged
	refusedQuiet int        // refusals since then, not logged
}

// New returns a server for c; Handler serves it, Start listens.
func New(c Config) *Server {
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return &Server{c: c}
}

// ReadToken reads admin.token_file; "" when file is "".
func ReadToken(file string) (string, error) {
	if file == "" {
		return "", nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("admin.token_file: %w", err)
	}
	token := strings.TrimSpace(string(b))
	if len(token) < minTokenLen {
		return "", fmt.Errorf("admin.token_file: token must be at least %d characters", minTokenLen)
	}
	return token, nil
}

// Start listens on address and serves until the returned func is called.
// An address that cannot be bound is logged, not fatal: mail must keep
// flowing without metrics.
func (s *Server) Start(address string) (stop func()) {
	ln, err := net.Listen("tcp", address)
	if err != nil {
		s.c.Log.Error("admin listener not started; /metrics unavailable", "address", address, "err", err)
		return func() {}
	}
	if s.c.TLSConfig != nil {
		ln = tls.NewListener(ln, s.c.TLSConfig)
	}
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: readHeaderTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.c.Log.Handler(), slog.LevelWarn),
	}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.c.Log.Error("admin listener stopped", "err", err)
		}
	}()
	s.c.Log.Info("admin listening", "address", ln.Addr().String(), "tls", s.c.TLSConfig != nil, "console", s.c.Console != nil)
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}
}

// Handler serves every admin endpoint.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	if s.c.Metrics != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(s.c.Metrics, promhttp.HandlerOpts{
			ErrorLog: slog.NewLogLogger(s.c.Log.Handler(), slog.LevelError),
		}))
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	if s.c.Reload != nil {
		mux.Handle("POST /reload", s.protect(http.HandlerFunc(s.reload)))
	}
	if s.c.Guard != nil {
		mux.Handle(GuardPrefix+"/", s.protect(http.StripPrefix(GuardPrefix, guardHandler(s.c.Guard))))
	}
	if s.c.Console != nil {
		mux.Handle(ConsolePrefix, s.c.Console)
		mux.Handle("GET /{$}", http.RedirectHandler(ConsolePrefix, http.StatusSeeOther))
	}
	return mux
}

// protect is the one token check: without "Authorization: Bearer
// <token>" the answer is 401, the same on every path and whatever is
// wrong with the token.
func (s *Server) protect(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.tokenOK(r) {
			s.logRefusal(r)
			w.Header().Set("WWW-Authenticate", `Bearer realm="mailgate admin"`)
			http.Error(w, "missing or wrong bearer token", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// tokenOK reports whether r carries "Authorization: Bearer <token>". The
// hashes are compared, in constant time whatever the lengths.
func (s *Server) tokenOK(r *http.Request) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	g, w := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(s.c.Token))
	return s.c.Token != "" && ok && subtle.ConstantTimeCompare(g[:], w[:]) == 1
}

// logRefusal writes the WARN for a request with a bad or missing token,
// at most once per RefusalLogInterval; the line counts the refusals not
// logged since the last one.
func (s *Server) logRefusal(r *http.Request) {
	s.refusedMu.Lock()
	now := time.Now()
	if !s.refusedLog.IsZero() && now.Sub(s.refusedLog) < RefusalLogInterval {
		s.refusedQuiet++
		s.refusedMu.Unlock()
		return
	}
	quiet := s.refusedQuiet
	s.refusedLog, s.refusedQuiet = now, 0
	s.refusedMu.Unlock()
	s.c.Log.Warn("admin request refused: bad or missing token", "method", r.Method, "path", r.URL.EscapedPath(),
		"remote", r.RemoteAddr, "token_configured", s.c.Token != "", "not_logged_before", quiet)
}

func (s *Server) reload(w http.ResponseWriter, r *http.Request) {
	s.c.Log.Info("reload requested over the admin API")
	if err := s.c.Reload(); err != nil {
		w.WriteHeader(http.StatusConflict)
		for _, e := range errlist.Split(err) {
			fmt.Fprintf(w, "reload failed; previous config kept: %v\n", e)
		}
		return
	}
	fmt.Fprintln(w, "reloaded")
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	// The result is cached for every caller: it must not depend on this
	// caller staying (a probe that hangs up would cache its "canceled"
	// as a 503). Each dial is bounded by ReadyDialTimeout.
	errs := s.readiness(context.WithoutCancel(r.Context()))
	if len(errs) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		for _, e := range errs {
			fmt.Fprintln(w, e)
		}
		return
	}
	fmt.Fprintln(w, "ready")
}

// readiness returns what is not ready, from cache when fresh.
func (s *Server) readiness(ctx context.Context) []string {
	if s.c.Ready == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.readyAt.IsZero() && time.Since(s.readyAt) < ReadyCacheTTL {
		return s.readyErrs
	}
	s.readyErrs = s.c.Ready(ctx)
	s.readyAt = time.Now()
	return s.readyErrs
}

// Probe is a backend /readyz dials: its config key and address.
type Probe struct {
	Name, Addr string
	// Check, when set, is the probe instead of a TCP dial of Addr (a
	// unix socket, a protocol handshake); ctx carries ReadyDialTimeout.
	Check func(ctx context.Context) error
}

// CheckReady dials each probe (in parallel, each bounded by
// ReadyDialTimeout) and, when needTLS, checks that one certificate of
// certs (name → expiry) is unexpired at now. It returns what is not
// ready, one line each.
func CheckReady(ctx context.Context, probes []Probe, needTLS bool, certs map[string]time.Time, now time.Time) []string {
	errs := make([]string, len(probes))
	var wg sync.WaitGroup
	for i, p := range probes {
		wg.Go(func() {
			if p.Check != nil {
				ctx, cancel := context.WithTimeout(ctx, ReadyDialTimeout)
				defer cancel()
				if err := p.Check(ctx); err != nil {
					errs[i] = fmt.Sprintf("%s %s unreachable: %v", p.Name, p.Addr, err)
				}
				return
			}
			d := net.Dialer{Timeout: ReadyDialTimeout}
			c, err := d.DialContext(ctx, "tcp", p.Addr)
			if err != nil {
				errs[i] = fmt.Sprintf("%s %s unreachable: %v", p.Name, p.Addr, err)
				return
			}
			c.Close()
		})
	}
	wg.Wait()
	errs = slices.DeleteFunc(errs, func(s string) bool { return s == "" })
	if needTLS {
		valid := 0
		for _, t := range certs {
			if t.After(now) {
				valid++
			}
		}
		if valid == 0 {
			errs = append(errs, "no unexpired certificate to serve on the TLS listeners")
		}
	}
	return errs
}
