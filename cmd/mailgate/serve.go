package main

import (
	"context"
	"errors"
	"fmt"
	"github.com/mailgate/mailgate/internal/errlist"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"reflect"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/mailgate/mailgate/adapter"
	"github.com/mailgate/mailgate/audit"
	"github.com/mailgate/mailgate/backend"
	"github.com/mailgate/mailgate/console"
	"github.com/mailgate/mailgate/geo"
	"github.com/mailgate/mailgate/guard"
	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/proxy"
	"github.com/mailgate/mailgate/tlsconf"
)

// state is one complete, consistent set of reloadable parts built from a
// config. A reload builds a new state and swaps it in, or keeps the old.
type state struct {
	cfg  *Config
	geo  *geo.DB
	pol  *policy.Engine
	opts proxy.Options
	// nginxSecret and dovecotSecret are adapters.nginx's and
	// adapters.dovecot's shared secrets ("" when off).
	nginxSecret, dovecotSecret string
	// stop ends this state's background watchers when it is replaced.
	stop context.CancelFunc
}

// buildState opens databases and policy files and makes the backends. It
// does not touch listeners or certificates (see tlsconf.Manager).
func buildState(cfg *Config, tm *tlsconf.Manager, log *slog.Logger) (*state, error) {
	var errs []error
	gdb, err := geo.Open(cfg.Geo, log.With("component", "geo"))
	if err != nil {
		return nil, err
	}
	pol, err := policy.New(cfg.Policy, gdb, log.With("component", "policy"))
	if err != nil {
		errs = append(errs, err)
	}
	imapB, err := backendOptions(cfg.Backends.IMAP, "backends.imap", log)
	errs = append(errs, err)
	pop3B, err := backendOptions(cfg.Backends.POP3, "backends.pop3", log)
	errs = append(errs, err)
	smtpB, err := backendOptions(&cfg.Backends.SMTP.BackendConfig, "backends.smtp", log)
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	nginxSecret, err := readNginxSecret(cfg)
	if err != nil {
		return nil, err
	}
	dovecotSecret, err := readDovecotSecret(cfg)
	if err != nil {
		return nil, err
	}
	imap := &backend.IMAP{Opts: imapB}
	smtp := &backend.SMTP{
		Opts:        smtpB,
		Verify:      cfg.Backends.SMTP.Verify,
		DovecotAuth: cfg.Backends.SMTP.DovecotAuth,
		XCLIENT:     cfg.Backends.SMTP.XCLIENT,
		Hostname:    cfg.Hostname,
		VerifyIMAP:  imap,
		CacheTTL:    backend.DefaultVerifyCacheTTL,
	}
	if t := cfg.Backends.SMTP.VerifyCacheTTL; t != nil {
		smtp.CacheTTL = *t
	}
	return &state{
		cfg:           cfg,
		geo:           gdb,
		pol:           pol,
		nginxSecret:   nginxSecret,
		dovecotSecret: dovecotSecret,
		opts: proxy.Options{
			Logger:     log,
			Hostname:   cfg.Hostname,
			Authorizer: pol,
			IMAP:       imap,
			POP3:       &backend.POP3{Opts: pop3B},
			SMTP:       smtp,
			Limits:     cfg.Limits,
		},
	}, nil
}

// backendOptions completes one backend's options with its TLS config.
func backendOptions(bc *BackendConfig, path string, log *slog.Logger) (backend.Options, error) {
	o := bc.Options
	// The backend package names the backend (backend=imap) on its lines;
	// a second backend= here gave every line two values for one key.
	o.Logger = log.With("component", "backend")
	if o.TLS != backend.TLSNone {
		v := bc.TLSVerify
		if v.ServerName == "" {
			v.ServerName, _, _ = net.SplitHostPort(o.Address)
		}
		tc, err := tlsconf.BackendConfig(v)
		if err != nil {
			return o, fmt.Errorf("%s.tls_verify: %w", path, err)
		}
		o.TLSConfig = tc
	}
	return o, nil
}

// startWatchers polls the geo and policy files of s until s is replaced.
func (s *state) startWatchers(parent context.Context) {
	ctx, cancel := context.WithCancel(parent)
	s.stop = cancel
	go s.geo.Watch(ctx)
	go s.pol.Watch(ctx)
}

func newLogger(c LogConfig, w io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(c.Level)) // validated before
	o := &slog.HandlerOptions{Level: lvl}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, o))
	}
	return slog.New(slog.NewTextHandler(w, o))
}

// printErrors writes each joined error on its own line.
func printErrors(w io.Writer, prefix string, err error) {
	for _, e := range errlist.Split(err) {
		fmt.Fprintf(w, "%s: %v\n", prefix, e)
	}
}

func runServe(args []string, stderr io.Writer) int {
	fs, path := commandFlags("serve", stderr)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		printErrors(stderr, "mailgate: "+*path, err)
		return 2
	}
	log, closeLog, err := newServeLogger(cfg, stderr)
	if err != nil {
		printErrors(stderr, "mailgate", err)
		return 1
	}
	defer closeLog()
	g, err := startGateway(cfg, log)
	if err != nil {
		printErrors(stderr, "mailgate", err)
		return 1
	}
	registerSyslogMetrics(g.ops.reg, log)
	load := func() (*Config, error) { return loadConfig(*path) }
	stopOps, err := startOps(g, cfg.Admin, load)
	if err != nil {
		printErrors(stderr, "mailgate", err)
		_ = g.srv.Close()
		return 1
	}
	defer stopOps()
	if g.audit != nil {
		defer g.audit.Close() // after the drain: the last decisions are written
	}
	return g.waitSignals(load)
}

// gateway is a running mailgate: listeners, the proxy server and the
// current state.
type gateway struct {
	log    *slog.Logger
	srv    *proxy.Server
	tm     *tlsconf.Manager
	ctx    context.Context
	cancel context.CancelFunc
	// cur is the state in use. Readers (the signals loop, /metrics, the
	// admin handlers) load it without a lock and never wait for a
	// reload; a state is not changed once stored.
	cur atomic.Pointer[state]
	// reloadMu serializes reloads (SIGHUP and POST /reload); it is held
	// while a reload opens files, which readers must not wait for.
	reloadMu sync.Mutex
	lns      []net.Listener
	done     chan struct{} // closed when every Serve has returned
	ops      *opsMetrics   // registry and metrics; survive reloads
	guard    *guardRunner  // brute-force guard; survives reloads
	audit    *audit.Store  // login history; nil: off; survives reloads
	nginx    *nginxAdapter // the auth_http adapter; nil: off
	// dovecotPolicy is the address adapters.dovecot listens on; nil: off.
	dovecotPolicy net.Addr
	dovecot       *dovecotPolicy // the auth_policy adapter; nil: off
	// adapters runs the Dovecot adapter's goroutines; stopping waits for
	// them before the guard's final save.
	adapters sync.WaitGroup
	// console is the web console; nil: off. A reload re-reads its users
	// file (console.go).
	console atomic.Pointer[console.Server]
}

// current returns the state in use.
func (g *gateway) current() *state { return g.cur.Load() }

// startGateway opens everything cfg names and starts serving. Any error
// (unreadable database, bad certificate, port in use) stops start-up.
func startGateway(cfg *Config, log *slog.Logger) (*gateway, error) {
	tm, err := tlsconf.New(cfg.TLS, log.With("component", "tls"))
	if err != nil {
		return nil, err
	}
	st, err := buildState(cfg, tm, log)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	g := &gateway{log: log, tm: tm, ctx: ctx, cancel: cancel, done: make(chan struct{})}
	g.ops = newOpsMetrics(g)
	st.opts.Metrics = g.ops.proxy
	// The audit database first: the guard's compromise signal reads the
	// login history from it.
	if g.audit, err = openAudit(cfg, g.ops.reg, log); err != nil {
		cancel()
		return nil, err
	}
	st.opts.Auditor = auditor(g.audit)
	if g.guard, err = startGuard(ctx, cfg, st.geo, g.audit, g.ops.reg, log); err != nil {
		cancel()
		if g.audit != nil {
			g.audit.Close()
		}
		return nil, err
	}
	st.opts.Guard = g.guard.g
	g.srv = proxy.NewServer(st.opts)

	var ls []proxy.Listener
	for _, lc := range cfg.Listeners {
		l, err := proxyListener(lc, tm)
		if err != nil {
			cancel()
			return nil, err
		}
		// KeepAlive -1: the proxy turns keep-alive on for admitted
		// connections only, so a refusal at accept stays cheap.
		ln, err := (&net.ListenConfig{KeepAlive: -1}).Listen(context.Background(), "tcp", lc.Address)
		if err != nil {
			g.closeListeners()
			cancel()
			return nil, fmt.Errorf("listener %s: %w", lc.Name, err)
		}
		g.lns = append(g.lns, ln)
		ls = append(ls, l)
	}
	startWarnings(log, cfg, st)
	if err = g.startNginxAdapter(st); err != nil {
		g.closeListeners()
		cancel()
		return nil, err
	}

	go func() {
		if err := tm.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			log.Error("tls manager stopped", "err", err)
		}
	}()
	go memoryReleaser(ctx, log)
	st.startWatchers(ctx)
	g.cur.Store(st) // complete now; before anything that reads it runs
	if err := startDovecotPolicy(g, st); err != nil {
		g.closeListeners()
		cancel()
		return nil, err
	}

	var wg sync.WaitGroup
	for i, ln := range g.lns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := g.srv.Serve(ln, ls[i])
			if err != nil && !errors.Is(err, proxy.ErrServerClosed) {
				log.Error("listener stopped", "listener", ls[i].Name, "err", err)
			}
		}()
		log.Info("listening", "listener", ls[i].Name, "proto", ls[i].Protocol,
			"address", ln.Addr().String(), "tls", ls[i].TLS)
	}
	go func() { wg.Wait(); close(g.done) }()
	return g, nil
}

func proxyListener(lc ListenerConfig, tm *tlsconf.Manager) (proxy.Listener, error) {
	pf, err1 := geo.ParseNetworks(lc.ProxyFrom, "proxy_protocol_from")
	tf, err2 := geo.ParseNetworks(lc.PlaintextFrom, "plaintext_from")
	if err := errors.Join(err1, err2); err != nil {
		return proxy.Listener{}, err
	}
	l := proxy.Listener{
		Name:          lc.Name,
		Protocol:      policy.Protocol(lc.Protocol),
		TLS:           lc.TLS,
		ProxyFrom:     pf,
		PlaintextFrom: tf,
	}
	if lc.TLS != backend.TLSNone {
		l.TLSConfig = tm.ServerConfig(lc.Protocol)
	}
	return l, nil
}

func (g *gateway) closeListeners() {
	for _, ln := range g.lns {
		_ = ln.Close()
	}
}

// reload builds a complete new state from a freshly read config and swaps
// it in; on any error the running state stays and every error is logged.
// Reloads run one at a time; while one reads files, everything else keeps
// using the running state.
func (g *gateway) reload(load func() (*Config, error)) error {
	g.reloadMu.Lock()
	defer g.reloadMu.Unlock()
	err := g.reloadState(load)
	// The console's accounts and roles apply whether or not the config
	// loads: taking rights away must not wait for a config fix. A users
	// file that cannot be read keeps the console's sessions and accounts
	// (the console logs it) and counts as a failed reload.
	if cerr := g.reloadConsoleUsers(); cerr != nil {
		err = errors.Join(err, fmt.Errorf("console users file: %w", cerr))
	}
	g.ops.reloaded(err)
	return err
}

// reloadState is reload's config part; the caller holds reloadMu.
func (g *gateway) reloadState(load func() (*Config, error)) error {
	old := g.current() // only reloads store, and they hold reloadMu
	cfg, err := load()
	if err == nil {
		var st *state
		st, err = buildState(cfg, g.tm, g.log)
		if err == nil {
			// A broken certificate file fails the whole reload, as a
			// broken policy does: the issue asks for all or nothing.
			// (tlsconf has already kept the old certificate of each broken
			// entry and taken the good ones.)
			if terr := g.tm.Reload(); terr != nil {
				err = fmt.Errorf("tls: %w", terr)
			}
		}
		if err == nil {
			if !reflect.DeepEqual(cfg.Listeners, old.cfg.Listeners) || !reflect.DeepEqual(cfg.TLS, old.cfg.TLS) {
				g.log.Warn("reload: listener and tls settings changed; they take effect after a restart")
			}
			old.stop()
			st.startWatchers(g.ctx)
			st.opts.Metrics = g.ops.proxy
			st.opts.Guard = g.guard.g
			st.opts.Auditor = auditor(g.audit)
			g.guard.reload(cfg, st.geo, g.log)
			g.cur.Store(st) // complete: nothing writes st after this
			g.srv.Update(st.opts)
			g.reloadNginxAdapter(old, st, g.log)
			g.reloadDovecotPolicy(old, st, g.log)
			g.log.Info("reload: new config, policy and databases in use")
			warnStaleGeo(g.log, st)
			return nil
		}
	}
	for _, e := range errlist.Split(err) {
		g.log.Error("reload failed; previous config kept", "err", e)
	}
	return err
}

// waitSignals runs until SIGTERM or SIGINT, reloading on SIGHUP. The
// first stop signal drains; a second exits at once.
func (g *gateway) waitSignals(load func() (*Config, error)) int {
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sig)
	for s := range sig {
		if s == syscall.SIGHUP {
			g.log.Info("SIGHUP: reloading")
			_ = g.reload(load)
			continue
		}
		drain := g.current().cfg.DrainTimeout
		g.log.Info("stopping: draining sessions", "signal", s.String(), "drain_timeout", drain)
		ctx, cancel := context.WithTimeout(context.Background(), drain)
		go func() {
			for s := range sig {
				if s != syscall.SIGHUP {
					g.log.Warn("second signal: exiting now")
					os.Exit(1)
				}
			}
		}()
		err := g.srv.Shutdown(ctx)
		cancel()
		g.cancel()
		g.nginx.wait()
		g.adapters.Wait()
		g.guard.wait() // the guard's final state save
		if err != nil {
			g.log.Warn("drain time over; remaining sessions closed", "err", err)
		}
		g.log.Info("stopped")
		return 0
	}
	return 0
}

// shutdown stops g; used by tests and the demo.
func (g *gateway) shutdown(ctx context.Context) error {
	err := g.srv.Shutdown(ctx)
	g.cancel()
	<-g.done
	g.nginx.wait()
	g.adapters.Wait()
	g.guard.wait()
	return err
}

func runCheckConfig(args []string, stdout, stderr io.Writer) int {
	fs, path := commandFlags("check-config", stderr)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		printErrors(stderr, *path, err)
		return 1
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	tm, err := tlsconf.New(cfg.TLS, log)
	var errs []error
	errs = append(errs, err)
	st, err := buildState(cfg, tm, log)
	errs = append(errs, err)
	_, err = guard.New(cfg.Guard, guard.Options{}) // reads the fingerprint secret
	errs = append(errs, err)
	shared, err := checkShared(cfg) // reads the store's secrets
	errs = append(errs, err)
	_, err = readAdminToken(cfg.Admin)
	errs = append(errs, err)
	if c := cfg.Adapters.Dovecot; c.Enabled() {
		_, err = adapter.ReadSecret(dovecotPolicyKey, c.SecretFile)
		errs = append(errs, err)
	}
	errs = append(errs, checkConsoleUsers(cfg.Admin.Console))
	if cfg.Syslog.Enabled {
		// serve runs without the socket, but fail2ban would see nothing.
		if err := probeSyslog(cfg.Syslog); err != nil {
			errs = append(errs, fmt.Errorf("syslog.address: %w (serve would start, but send no lines for fail2ban until it is there)", err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		printErrors(stderr, *path, err)
		return 1
	}
	// Every warning serve would log at start, on the same logger
	// (standard error, level warn).
	startWarnings(log, cfg, st)
	for _, info := range st.geo.Info() {
		fmt.Fprintf(stdout, "geo database: %s\n", info)
	}
	warnSMTPRelay(st, stderr)
	warnDovecotAuth(cfg, stderr)
	if shared != "" {
		fmt.Fprintln(stdout, shared)
	}
	fmt.Fprintf(stdout, "%s: OK (%d listeners)\n", *path, len(cfg.Listeners))
	return 0
}
