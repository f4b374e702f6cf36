package main

// The admin HTTP listener: /metrics (Prometheus), /healthz (the process
// serves), /readyz (backends reachable, certificates present) and POST
// /reload (like SIGHUP; needs the admin token). It listens on loopback by
// default; metrics name countries and rules, nothing for the internet.

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

const (
	// readyCacheTTL: /readyz dials every backend at most this often, so
	// a scrape storm cannot become a connection storm on Dovecot.
	readyCacheTTL = 5 * time.Second
	// readyDialTimeout bounds each backend probe; a backend slower than
	// this to accept is not ready for logins either.
	readyDialTimeout = 2 * time.Second
	// Admin HTTP bounds, as for any server reachable by a local user.
	adminReadHeaderTimeout = 5 * time.Second
	adminWriteTimeout      = 30 * time.Second
	adminIdleTimeout       = 60 * time.Second
	adminMaxHeaderBytes    = 8 << 10
	// geoAgeCheckInterval: how often the database age is logged again.
	geoAgeCheckInterval = 24 * time.Hour
	// adminRefusalLogInterval: requests with a bad or missing token are
	// logged at most this often (with the count of the ones not logged),
	// so a script hammering the port cannot fill the log.
	adminRefusalLogInterval = 10 * time.Second
)

// adminServer serves the admin endpoints of one gateway.
type adminServer struct {
	g     *gateway
	log   *slog.Logger
	token string                  // bearer token for POST endpoints; "" disables them
	load  func() (*Config, error) // config loader for POST /reload

	mu        sync.Mutex // guards the readiness cache
	readyAt   time.Time
	readyErrs []string

	refusedMu    sync.Mutex // guards the two below
	refusedLog   time.Time  // when the last refusal was logged
	refusedQuiet int        // refusals since then, not logged
}

// startOps starts the admin listener (unless admin.address is "off") and
// the daily geo-age warning. A port the admin listener cannot bind is
// logged, not fatal: mail must keep flowing without metrics. The
// returned func stops both.
func startOps(g *gateway, c AdminConfig, load func() (*Config, error)) (func(), error) {
	a := &adminServer{g: g, log: g.log.With("component", "admin"), load: load}
	var err error
	if a.token, err = readAdminToken(c); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	go a.watchGeoAge(ctx)
	if c.Address == "off" {
		return cancel, nil
	}
	ln, err := net.Listen("tcp", c.Address)
	if err != nil {
		a.log.Error("admin listener not started; /metrics unavailable", "address", c.Address, "err", err)
		return cancel, nil
	}
	srv := &http.Server{
		Handler:           a.handler(),
		ReadHeaderTimeout: adminReadHeaderTimeout,
		WriteTimeout:      adminWriteTimeout,
		IdleTimeout:       adminIdleTimeout,
		MaxHeaderBytes:    adminMaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
	}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("admin listener stopped", "err", err)
		}
	}()
	a.log.Info("admin listening", "address", ln.Addr().String())
	return func() {
		cancel()
		sctx, scancel := context.WithTimeout(context.Background(), time.Second)
		defer scancel()
		_ = srv.Shutdown(sctx)
	}, nil
}

// readAdminToken reads admin.token_file; "" when none is configured.
// check-config reads it the same way serve does.
func readAdminToken(c AdminConfig) (string, error) {
	if c.TokenFile == "" {
		return "", nil
	}
	b, err := os.ReadFile(c.TokenFile)
	if err != nil {
		return "", fmt.Errorf("admin.token_file: %w", err)
	}
	token := strings.TrimSpace(string(b))
	if len(token) < 16 {
		return "", errors.New("admin.token_file: token must be at least 16 characters")
	}
	return token, nil
}

func (a *adminServer) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.g.ops.reg, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(a.log.Handler(), slog.LevelError),
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", a.readyz)
	mux.HandleFunc("POST /reload", a.requireToken(a.reload))
	if a.g.guard != nil {
		// The token is checked here first, so that refusals are logged
		// with the rate limit; the guard's handler checks it again.
		gh := a.g.guard.adminHandler(a.token)
		mux.Handle(guardAdminPrefix+"/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !a.tokenOK(r) {
				a.logRefusal(r)
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusUnauthorized)
				fmt.Fprintln(w, `{"error":"missing or wrong bearer token"}`)
				return
			}
			gh.ServeHTTP(w, r)
		}))
	}
	return mux
}

// tokenOK reports whether r carries "Authorization: Bearer <token>". The
// hashes are compared, in constant time whatever the lengths.
func (a *adminServer) tokenOK(r *http.Request) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	g, w := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(a.token))
	return a.token != "" && ok && subtle.ConstantTimeCompare(g[:], w[:]) == 1
}

// logRefusal writes the WARN for a request with a bad or missing token,
// at most once per adminRefusalLogInterval; the line counts the refusals
// not logged since the last one.
func (a *adminServer) logRefusal(r *http.Request) {
	a.refusedMu.Lock()
	now := time.Now()
	if !a.refusedLog.IsZero() && now.Sub(a.refusedLog) < adminRefusalLogInterval {
		a.refusedQuiet++
		a.refusedMu.Unlock()
		return
	}
	quiet := a.refusedQuiet
	a.refusedLog, a.refusedQuiet = now, 0
	a.refusedMu.Unlock()
	a.log.Warn("admin request refused: bad or missing token", "method", r.Method, "path", r.URL.EscapedPath(),
		"remote", r.RemoteAddr, "not_logged_before", quiet)
}

// requireToken lets a request through only with "Authorization: Bearer
// <token>"; without a configured token the endpoint does not exist.
func (a *adminServer) requireToken(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if a.token == "" {
			http.Error(w, "no admin.token_file configured", http.StatusNotFound)
			return
		}
		if !a.tokenOK(r) {
			a.logRefusal(r)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		h(w, r)
	}
}

func (a *adminServer) reload(w http.ResponseWriter, r *http.Request) {
	a.log.Info("reload requested over the admin API")
	if err := a.g.reload(a.load); err != nil {
		w.WriteHeader(http.StatusConflict)
		for _, e := range unjoin(err) {
			fmt.Fprintf(w, "reload failed; previous config kept: %v\n", e)
		}
		return
	}
	fmt.Fprintln(w, "reloaded")
}

func (a *adminServer) readyz(w http.ResponseWriter, r *http.Request) {
	// The result is cached for every caller: it must not depend on this
	// caller staying (a probe that hangs up would cache its "canceled"
	// as a 503). Each dial is bounded by readyDialTimeout.
	errs := a.readiness(context.WithoutCancel(r.Context()))
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
func (a *adminServer) readiness(ctx context.Context) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.readyAt.IsZero() && time.Since(a.readyAt) < readyCacheTTL {
		return a.readyErrs
	}
	a.readyErrs = checkReady(ctx, a.g.current().cfg, a.g.tm.Expiry(), time.Now())
	a.readyAt = time.Now()
	return a.readyErrs
}

// checkReady dials each backend a listener uses and checks that a TLS
// listener has an unexpired certificate to serve.
func checkReady(ctx context.Context, cfg *Config, certs map[string]time.Time, now time.Time) []string {
	// Only backends a listener uses: a site without POP3 must not be
	// unready because nothing answers on the default POP3 address.
	// Submission in imap verify mode checks passwords over IMAP.
	uses := map[string]bool{}
	for _, l := range cfg.Listeners {
		uses[l.Protocol] = true
	}
	if uses["smtp"] && cfg.Backends.SMTP.Verify == "imap" {
		uses["imap"] = true
	}
	type probe struct{ name, addr string }
	var probes []probe
	for _, p := range []probe{
		{"imap", cfg.Backends.IMAP.Address},
		{"pop3", cfg.Backends.POP3.Address},
		{"smtp", cfg.Backends.SMTP.Address},
	} {
		if uses[p.name] {
			probes = append(probes, probe{"backends." + p.name, p.addr})
		}
	}
	errs := make([]string, len(probes))
	var wg sync.WaitGroup
	for i, p := range probes {
		wg.Go(func() {
			d := net.Dialer{Timeout: readyDialTimeout}
			c, err := d.DialContext(ctx, "tcp", p.addr)
			if err != nil {
				errs[i] = fmt.Sprintf("%s %s unreachable: %v", p.name, p.addr, err)
				return
			}
			c.Close()
		})
	}
	wg.Wait()
	errs = slices.DeleteFunc(errs, func(s string) bool { return s == "" })
	needTLS := slices.ContainsFunc(cfg.Listeners, func(l ListenerConfig) bool { return l.TLS != "none" })
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

// watchGeoAge repeats the stale database warning daily until ctx ends.
func (a *adminServer) watchGeoAge(ctx context.Context) {
	t := time.NewTicker(geoAgeCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			warnStaleGeo(a.g.log, a.g.current())
		}
	}
}
