package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mailgate/mailgate/guard"
	"github.com/mailgate/mailgate/integration/mailstack"
	"github.com/mailgate/mailgate/integration/testport"
)

// Target names in the suite's tables: (a) the backend alone, (b) the
// setup being replaced, (c) mailgate.
const (
	tDirect   = "dovecot"
	tNginx    = "nginx"
	tMailgate = "mailgate"
	// tBase is a second mailgate built from another commit (-base), for
	// before/after figures from one run.
	tBase = "mailgate-base"
)

var targetNames = []string{tDirect, tNginx, tMailgate}

// suiteOpts are the suite's flags.
type suiteOpts struct {
	rounds    int
	dur       time.Duration
	concs     []int
	protoConc int
	size      int
	xferReps  int
	idle      int
	idleBig   int
	pacedRate float64 // paced step: sessions offered per second (0: 0.9 × nginx's rate)
	settle    time.Duration
	mgEnv     []string // extra environment for mailgate only, e.g. GOMAXPROCS=1
	baseEnv   []string // extra environment for mailgate-base (-base); nil: mgEnv
	// backendSlots is guard.backend.max_concurrent for both mailgates
	// (0: no cap).
	backendSlots int
	out          string
	step         time.Duration
	skip         map[string]bool
	keep         bool
	idleNote     string        // why idleBig was reduced, for the results
	loginProcs   int           // Dovecot login processes in high-performance mode; 0: one per connection
	curves       []tls.CurveID // client key exchanges; nil: Go's default
	base         string        // git revision of a second mailgate to measure beside this one ("": none)
	resumeC      int           // concurrency of the runs with TLS session resumption (0: none)
	// smtpNoVerify: nginx's auth_http answers OK to every SMTP login
	// without checking the password (as before 2026-12-07).
	smtpNoVerify bool
	idleNatural  time.Duration // idle: also read memory this long after the sessions opened, with no forced collection (0: skip)
	// idleFresh restarts nginx and mailgate before each idle
	// measurement, so each grows from its own start, not from memory an
	// earlier step left it.
	idleFresh bool
}

// stackEnv is everything the suite started.
type stackEnv struct {
	st        *mailstack.Stack
	nginx     *proc
	auth      *proc // nginx's auth_http endpoint
	mg        *proc
	mgBin     string
	base      *proc // the -base mailgate, nil without
	baseBin   string
	names     []string // the targets measured, in table order
	guard     bool
	addrs     map[string]map[string]string // target → proto → addr
	pids      map[string]int               // target → pid whose tree is "the proxy"
	mgPorts   mailgatePorts
	basePorts mailgatePorts
	ngxPorts  nginxPorts
	authAddr  string
	workDir   string
	nginxErr  error
}

// suiteRaw holds the suite's flags that runSuite parses further.
type suiteRaw struct{ conc, size, mgEnv, baseEnv, kex, skip *string }

// suiteFlags defines the suite's command line over o. docs/BENCHMARKS.md
// ("Suite flags") lists every flag with its default; a test keeps the two
// the same.
func suiteFlags(o *suiteOpts) (*flag.FlagSet, suiteRaw) {
	fs := flag.NewFlagSet("suite", flag.ContinueOnError)
	var r suiteRaw
	r.conc = fs.String("c", "1,8,64", "IMAPS login concurrencies")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds; each figure is the median over rounds, targets alternate within a round")
	fs.DurationVar(&o.dur, "d", 8*time.Second, "duration of each logins run")
	fs.IntVar(&o.protoConc, "proto-c", 8, "concurrency of the POP3S and SMTPS login runs (0: skip them)")
	r.size = fs.String("size", "20MB", "message size of the throughput run")
	fs.IntVar(&o.xferReps, "xfer", 3, "throughput repetitions per target")
	fs.IntVar(&o.idle, "idle", 1000, "idle IMAPS sessions per target for memory per session (0: skip)")
	fs.IntVar(&o.idleBig, "idle-big", 10000, "idle IMAPS sessions held through nginx and mailgate (0: skip)")
	r.mgEnv = fs.String("mailgate-env", "", `extra environment for mailgate only, space-separated (e.g. "GOMAXPROCS=1")`)
	fs.IntVar(&o.backendSlots, "backend-slots", 0, fmt.Sprintf("guard.backend.max_concurrent of mailgate and mailgate-base (0: no cap; mailgate's own default is %d)", guard.Defaults().Backend.MaxConcurrent))
	r.baseEnv = fs.String("base-env", "", `extra environment for mailgate-base in place of -mailgate-env, space-separated; with -base HEAD it measures a runtime setting against none in one run`)
	fs.DurationVar(&o.settle, "settle", 10*time.Second, "idle: after two forced collections, wait this long before the settled memory reading")
	fs.StringVar(&o.out, "out", "", "directory for the CPU profile and results.md (default: a new one under /tmp)")
	fs.DurationVar(&o.step, "step", 10*time.Second, "deadline of each network step")
	fs.IntVar(&o.loginProcs, "dovecot-login-procs", 0, "run Dovecot's login services in high-performance mode with this many processes (0: Debian's default, a process per connection)")
	r.kex = fs.String("client-kex", "default", `client key exchange: "default" (Go's: X25519MLKEM768 first) or "x25519" (what nginx and Dovecot on OpenSSL 3.0 choose anyway)`)
	fs.BoolVar(&o.keep, "keep", false, "keep the daemons' scratch directories (logs, configs) for inspection")
	r.skip = fs.String("skip", "", "comma-separated parts to skip: logins, protos, resume, paced, throughput, idle, denied, profile")
	fs.StringVar(&o.base, "base", "", "git revision of a second mailgate, built and measured beside this tree's as mailgate-base (before/after in one run)")
	fs.BoolVar(&o.smtpNoVerify, "nginx-smtp-noverify", false, "nginx's auth_http answers OK to SMTP logins without checking the password (default: it checks it by an IMAP LOGIN against Dovecot, as a real deployment must)")
	fs.DurationVar(&o.idleNatural, "idle-natural", 0, "idle: also read memory this long after the sessions opened, with no forced collection (Go collects at least every 2 minutes; 0: skip)")
	fs.BoolVar(&o.idleFresh, "idle-fresh", true, "idle: restart nginx and mailgate before each idle measurement, so each grows from a fresh start (false: they go on from the steps before, and a process that kept an earlier step's memory shows less growth)")
	fs.IntVar(&o.resumeC, "resume-c", 64, "concurrency of the IMAPS and POP3S login runs with TLS session resumption (0: skip them)")
	fs.Float64Var(&o.pacedRate, "paced-rate", 0, "paced IMAPS logins offered per second at the highest -c (0: 0.9 × nginx's closed-loop rate there)")
	return fs, r
}

func runSuite(args []string) int {
	var o suiteOpts
	fs, r := suiteFlags(&o)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var err error
	if o.mgEnv, err = parseEnv(*r.mgEnv); err != nil {
		warnf("-mailgate-env: %v", err)
		return 2
	}
	if o.baseEnv, err = parseEnv(*r.baseEnv); err != nil {
		warnf("-base-env: %v", err)
		return 2
	}
	if o.backendSlots < 0 {
		warnf("-backend-slots: 0 or more")
		return 2
	}
	if o.baseEnv != nil && o.base == "" {
		warnf("-base-env needs -base")
		return 2
	}
	if o.concs, err = parseInts(*r.conc); err != nil {
		warnf("-c: %v", err)
		return 2
	}
	if o.size, err = parseSize(*r.size); err != nil {
		warnf("-size: %v", err)
		return 2
	}
	switch *r.kex {
	case "default":
	case "x25519":
		o.curves = []tls.CurveID{tls.X25519}
	default:
		warnf("-client-kex: default or x25519")
		return 2
	}
	o.skip = map[string]bool{}
	for _, s := range strings.Split(*r.skip, ",") {
		if s != "" {
			o.skip[s] = true
		}
	}
	if o.rounds < 1 || o.rounds > 50 || o.dur <= 0 || o.dur > 10*time.Minute || o.idleBig > 50000 || o.idle > 50000 {
		warnf("rounds 1..50, -d up to 10m, idle sessions up to 50000")
		return 2
	}
	ctx := context.Background()
	env, err := setupSuite(ctx, &o)
	defer env.teardown()
	if err != nil {
		warnf("%v", err)
		return 1
	}
	w := io.MultiWriter(os.Stdout, mustCreate(filepath.Join(o.out, "results.md")))
	header(w, o)
	var nginxRate float64
	if !o.skip["logins"] {
		nginxRate = suiteLogins(ctx, w, env, o)
	}
	if !o.skip["paced"] {
		suitePaced(ctx, w, env, o, nginxRate)
	}
	if !o.skip["throughput"] {
		suiteThroughput(ctx, w, env, o)
	}
	if !o.skip["idle"] && (o.idle > 0 || o.idleBig > 0) {
		suiteIdle(ctx, w, env, o)
	}
	if !o.skip["denied"] {
		suiteDenied(ctx, w, env, o)
	}
	fmt.Fprintf(w, "\nResults and profile in %s\n", o.out)
	return 0
}

func mustCreate(path string) io.Writer {
	f, err := os.Create(path)
	if err != nil {
		warnf("%v", err)
		return io.Discard
	}
	return f
}

func setupSuite(ctx context.Context, o *suiteOpts) (*stackEnv, error) {
	env := &stackEnv{addrs: map[string]map[string]string{}, pids: map[string]int{}}
	if os.Geteuid() != 0 {
		return env, errors.New("the suite runs Dovecot (mail uid 8), Postfix and nginx as their own users and must run as root; the logins, throughput and idle subcommands need no privileges")
	}
	nofile := raiseNoFile(uint64(4*max(o.idleBig, o.idle) + 10000))
	// mailgate holds two descriptors per spliced session (client and
	// backend). Without CAP_SYS_RESOURCE the hard limit cannot be raised,
	// so the big idle run is cut to what fits rather than run into EMFILE.
	if fit := (int(nofile) - 500) / 2; o.idleBig > fit {
		o.idleNote = fmt.Sprintf("idle-big cut from %d to %d sessions: the open-files limit is %d (hard limit; raising it needs CAP_SYS_RESOURCE) and mailgate needs two descriptors per session", o.idleBig, fit, nofile)
		warnf("%s", o.idleNote)
		o.idleBig = fit
	}
	repo, err := repoRoot()
	if err != nil {
		return env, err
	}
	if o.out == "" {
		if o.out, err = os.MkdirTemp("/tmp", "mgbench-out"); err != nil {
			return env, err
		}
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return env, err
	}
	var missing []string
	missing = append(missing, mailstack.Missing(mailstack.Options{Postfix: true})...)
	if _, err := mailstack.LookPath("nginx"); err != nil {
		missing = append(missing, "nginx")
	} else if _, err := os.Stat(ngxMailModule); err != nil {
		missing = append(missing, "libnginx-mod-mail ("+ngxMailModule+")")
	}
	if len(missing) > 0 {
		warnf("missing: %s (Debian: apt-get install dovecot-core dovecot-imapd dovecot-pop3d dovecot-lmtpd postfix nginx libnginx-mod-mail)", strings.Join(missing, ", "))
		if slices.ContainsFunc(missing, func(s string) bool { return strings.HasPrefix(s, "dove") }) {
			return env, errors.New("dovecot is required")
		}
	}
	// Build while the backends start.
	env.workDir, err = os.MkdirTemp("/tmp", "mgbw")
	if err != nil {
		return env, err
	}
	_ = os.Chmod(env.workDir, 0o755)
	type built struct {
		bin string
		err error
	}
	bc := make(chan built, 2)
	go func() {
		bin, err := buildMailgate(ctx, repo, env.workDir)
		bc <- built{bin, err}
	}()
	baseC := make(chan built, 1)
	if o.base != "" {
		go func() {
			bin, err := buildBase(ctx, repo, o.base, filepath.Join(env.workDir, "base"))
			baseC <- built{bin, err}
		}()
	}
	env.st, err = mailstack.Start(ctx, mailstack.Options{Postfix: !slices.Contains(missing, "postfix"), MaxSessions: max(o.idleBig, o.idle) + 500, LoginProcesses: o.loginProcs})
	b := <-bc
	if env.st != nil {
		env.st.Keep = o.keep
	}
	if err != nil {
		return env, err
	}
	if b.err != nil {
		return env, b.err
	}
	env.mgBin = b.bin
	if o.base != "" {
		bb := <-baseC
		if bb.err != nil {
			return env, bb.err
		}
		env.baseBin = bb.bin
	}
	st := env.st
	env.addrs[tDirect] = map[string]string{"imap": mailstack.Addr(st.IMAPS), "pop3": mailstack.Addr(st.POP3S)}
	if st.SMTPS != 0 {
		env.addrs[tDirect]["smtp"] = mailstack.Addr(st.SMTPS)
	}

	// The auth_http endpoint is a process of its own, started on a port
	// of its own like nginx and mailgate below.
	for attempt := 1; ; attempt++ {
		ports, err := mailstack.FreePorts(1)
		if err != nil {
			return env, err
		}
		env.auth, env.authAddr, err = startAuthHTTP(env.workDir, st, ports[0], !o.smtpNoVerify, o.step)
		if err == nil {
			break
		}
		if attempt == testport.Attempts || !testport.InUse(err.Error()) {
			return env, err
		}
	}
	// nginx and mailgate bind their ports themselves, so the ports come
	// from mailstack.FreePorts (outside the ephemeral range, never handed
	// out twice); when one was taken anyway, each starts again on new ones.
	var np nginxPorts
	for attempt := 1; ; attempt++ {
		ports, err := mailstack.FreePorts(3)
		if err != nil {
			return env, err
		}
		np = nginxPorts{IMAPS: ports[0], POP3S: ports[1], SMTPS: ports[2]}
		env.ngxPorts = np
		env.nginx, env.nginxErr = startNginx(env.workDir, env.authAddr, st, np)
		if env.nginxErr == nil || attempt == testport.Attempts || !testport.InUse(env.nginxErr.Error()) {
			break
		}
	}
	if env.nginxErr != nil {
		warnf("nginx not measured: %v", env.nginxErr)
	} else {
		env.addrs[tNginx] = map[string]string{"imap": mailstack.Addr(np.IMAPS), "pop3": mailstack.Addr(np.POP3S)}
		if st.SMTP != 0 {
			env.addrs[tNginx]["smtp"] = mailstack.Addr(np.SMTPS)
		}
		env.pids[tNginx] = env.nginx.pid()
	}
	for attempt := 1; ; attempt++ {
		ports, err := mailstack.FreePorts(5)
		if err != nil {
			return env, err
		}
		env.mgPorts = mailgatePorts{IMAPS: ports[0], POP3S: ports[1], SMTPS: ports[2], Admin: ports[3], Pprof: ports[4]}
		env.mg, env.guard, err = startMailgate(ctx, env.mgBin, env.workDir, st, env.mgPorts, o.mgEnv, o.backendSlots)
		if err == nil {
			break
		}
		if attempt == testport.Attempts || !testport.InUse(err.Error()) {
			return env, err
		}
	}
	env.addrs[tMailgate] = map[string]string{"imap": mailstack.Addr(env.mgPorts.IMAPS), "pop3": mailstack.Addr(env.mgPorts.POP3S)}
	if st.Submission != 0 {
		env.addrs[tMailgate]["smtp"] = mailstack.Addr(env.mgPorts.SMTPS)
	}
	env.pids[tMailgate] = env.mg.pid()
	if env.baseBin != "" {
		for attempt := 1; ; attempt++ {
			ports, err := mailstack.FreePorts(5)
			if err != nil {
				return env, err
			}
			env.basePorts = mailgatePorts{IMAPS: ports[0], POP3S: ports[1], SMTPS: ports[2], Admin: ports[3], Pprof: ports[4]}
			env.base, _, err = startMailgate(ctx, env.baseBin, filepath.Join(env.workDir, "base"), st, env.basePorts, o.envOfBase(), o.backendSlots)
			if err == nil {
				break
			}
			if attempt == testport.Attempts || !testport.InUse(err.Error()) {
				return env, err
			}
		}
		env.addrs[tBase] = map[string]string{"imap": mailstack.Addr(env.basePorts.IMAPS), "pop3": mailstack.Addr(env.basePorts.POP3S)}
		if st.Submission != 0 {
			env.addrs[tBase]["smtp"] = mailstack.Addr(env.basePorts.SMTPS)
		}
		env.pids[tBase] = env.base.pid()
	}
	for _, n := range []string{tDirect, tNginx, tMailgate, tBase} {
		if env.addrs[n] != nil {
			env.names = append(env.names, n)
		}
	}
	return env, nil
}

// restart stops a proxy target and starts it again on the same ports,
// so a measurement sees a process with nothing left from earlier steps.
func (e *stackEnv) restart(ctx context.Context, name string, o suiteOpts) error {
	var err error
	switch name {
	case tNginx:
		e.nginx.stop(syscall.SIGQUIT)
		e.nginx, err = startNginx(e.workDir, e.authAddr, e.st, e.ngxPorts)
		if err == nil {
			e.pids[name] = e.nginx.pid()
		}
	case tMailgate:
		e.mg.stop(syscall.SIGTERM)
		e.mg, _, err = startMailgate(ctx, e.mgBin, e.workDir, e.st, e.mgPorts, o.mgEnv, o.backendSlots)
		if err == nil {
			e.pids[name] = e.mg.pid()
		}
	case tBase:
		e.base.stop(syscall.SIGTERM)
		e.base, _, err = startMailgate(ctx, e.baseBin, filepath.Join(e.workDir, "base"), e.st, e.basePorts, o.envOfBase(), o.backendSlots)
		if err == nil {
			e.pids[name] = e.base.pid()
		}
	default:
		return nil // Dovecot alone is the shared backend: never restarted
	}
	if err != nil {
		// Nothing listens there any more: later steps skip the target
		// rather than measure a dead process.
		delete(e.addrs, name)
		delete(e.pids, name)
		return fmt.Errorf("restarting %s: %w", name, err)
	}
	return nil
}

func (e *stackEnv) teardown() {
	if e.mg != nil {
		e.mg.stop(syscall.SIGTERM)
	}
	if e.base != nil {
		e.base.stop(syscall.SIGTERM)
	}
	if e.nginx != nil {
		e.nginx.stop(syscall.SIGQUIT)
	}
	if e.auth != nil {
		e.auth.stop(syscall.SIGTERM)
	}
	e.st.Stop()
	if e.workDir != "" && (e.st == nil || !e.st.Keep) {
		os.RemoveAll(e.workDir)
	}
}

func (e *stackEnv) target(name, proto string, o suiteOpts) (target, bool) {
	a, ok := e.addrs[name][proto]
	return target{addr: a, tls: true, user: "alice@example.test", pass: "alicepass", step: o.step, curves: o.curves}, ok
}

// cpuOf returns a CPU reader for target name's process tree, or nil.
// nginx's includes its auth_http endpoint: the decision mailgate makes
// in its own process, nginx asks of another.
func (e *stackEnv) cpuOf(name string) func() time.Duration {
	pid := e.pids[name]
	if pid == 0 {
		return nil
	}
	if name == tNginx && e.auth != nil {
		apid := e.auth.pid()
		return func() time.Duration { return treeCPU(pid) + treeCPU(apid) }
	}
	return func() time.Duration { return treeCPU(pid) }
}

// authCPU reads the CPU time of nginx's auth_http endpoint, or is nil.
func (e *stackEnv) authCPU() func() time.Duration {
	if e.auth == nil {
		return nil
	}
	pid := e.auth.pid()
	return func() time.Duration { return treeCPU(pid) }
}

// backendCPU is the CPU time of every Dovecot and Postfix process,
// reaped children included: what the backends pay, whichever of them a
// login reaches (Postfix's smtpd and Dovecot's auth for SMTP).
func (e *stackEnv) backendCPU() time.Duration {
	return treeCPU(e.st.DovecotPID()) + treeCPU(e.st.PostfixPID())
}

func header(w io.Writer, o suiteOpts) {
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Fprintf(w, "# mailgate-bench suite %s\n\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(w, "machine: %d CPUs (GOMAXPROCS %d), %s/%s, %s; load average at start: %s\n",
		runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH, runtime.Version(), strings.TrimSpace(string(load)))
	mode := "a login process per connection (Debian's default)"
	if o.loginProcs > 0 {
		mode = fmt.Sprintf("high-performance login mode, %d login processes", o.loginProcs)
	}
	fmt.Fprintf(w, "Dovecot: %s\n", mode)
	kexNote := "Go's default (X25519MLKEM768 with mailgate, X25519 with OpenSSL 3.0 servers)"
	if o.curves != nil {
		kexNote = "X25519 only, for every target"
	}
	fmt.Fprintf(w, "client key exchange: %s\n", kexNote)
	if len(o.mgEnv) > 0 {
		fmt.Fprintf(w, "mailgate environment: %s\n", strings.Join(o.mgEnv, " "))
	}
	if o.backendSlots > 0 {
		fmt.Fprintf(w, "mailgate guard.backend.max_concurrent: %d\n", o.backendSlots)
	}
	if o.base != "" {
		fmt.Fprintf(w, "mailgate-base: mailgate built from %s, measured beside this tree's\n", o.base)
		if o.baseEnv != nil {
			fmt.Fprintf(w, "mailgate-base environment: %s\n", strings.Join(o.baseEnv, " "))
		}
	}
	fmt.Fprintf(w, "rounds %d, %s per logins run, targets alternate within each round; figures are medians over rounds\n", o.rounds, o.dur)
}

// parseEnv splits a space-separated NAME=value list; nil for none.
func parseEnv(s string) ([]string, error) {
	env := strings.Fields(s)
	for _, kv := range env {
		if name, _, ok := strings.Cut(kv, "="); !ok || name == "" {
			return nil, fmt.Errorf("%q is not NAME=value", kv)
		}
	}
	if len(env) == 0 {
		return nil, nil
	}
	return env, nil
}

// envOfBase is mailgate-base's extra environment: -base-env when given,
// else the same as mailgate's.
func (o suiteOpts) envOfBase() []string {
	if o.baseEnv != nil {
		return o.baseEnv
	}
	return o.mgEnv
}

// rotate gives round r's order of the targets, so none always runs first.
func (e *stackEnv) rotate(r int) []string {
	names := e.names
	if len(names) == 0 {
		names = targetNames
	}
	n := len(names)
	out := make([]string, n)
	for i := range n {
		out[i] = names[(i+r)%n]
	}
	return out
}

// suiteLogins runs the closed-loop logins and returns nginx's median
// IMAPS rate at the highest concurrency (0: not measured).
func suiteLogins(ctx context.Context, w io.Writer, e *stackEnv, o suiteOpts) float64 {
	type key struct {
		proto  string
		conc   int
		resume bool
	}
	var runs []key
	for _, c := range o.concs {
		runs = append(runs, key{"imap", c, false})
	}
	if !o.skip["protos"] && o.protoConc > 0 {
		runs = append(runs, key{"pop3", o.protoConc, false}, key{"smtp", o.protoConc, false})
	}
	if !o.skip["resume"] && o.resumeC > 0 {
		runs = append(runs, key{"imap", o.resumeC, true}, key{"pop3", o.resumeC, true})
	}
	res := map[key]map[string][]loginResult{}
	resumed := map[key]map[string][]float64{}
	profiled := o.skip["profile"]
	for r := range o.rounds {
		for _, k := range runs {
			for _, name := range e.rotate(r) {
				t, ok := e.target(name, k.proto, o)
				if !ok {
					continue
				}
				if k.resume {
					t.resume = newResumption()
				}
				proto := k.proto
				var profDone chan error
				if !profiled && name == tMailgate && proto == "imap" && !k.resume && k.conc == slices.Max(o.concs) {
					profiled = true
					profDone = make(chan error, 1)
					secs := max(int(o.dur.Seconds())-1, 1)
					go func() {
						profDone <- fetchFile(ctx, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", mailstack.Addr(e.mgPorts.Pprof), secs), filepath.Join(o.out, "mailgate-logins.pprof"))
					}()
				}
				var auth0 time.Duration
				authCPU := e.authCPU()
				if name == tNginx && authCPU != nil {
					auth0 = authCPU()
				}
				lr := runLogins(ctx, k.conc, o.dur, 0, func(ctx context.Context) error { return loginOnce(ctx, proto, t) }, e.cpuOf(name), e.backendCPU)
				lr.Proto = proto
				if name == tNginx && authCPU != nil && lr.OK > 0 {
					lr.AuthCPU = (authCPU() - auth0) / time.Duration(lr.OK)
				}
				if profDone != nil {
					if err := <-profDone; err != nil {
						warnf("CPU profile: %v", err)
					} else {
						writeProfileTop(w, e.mgBin, filepath.Join(o.out, "mailgate-logins.pprof"))
					}
				}
				if res[k] == nil {
					res[k] = map[string][]loginResult{}
					resumed[k] = map[string][]float64{}
				}
				res[k][name] = append(res[k][name], lr)
				share := ""
				if t.resume != nil {
					resumed[k][name] = append(resumed[k][name], t.resume.share())
					share = fmt.Sprintf(" resumed %.0f%%", 100*t.resume.share())
				}
				fmt.Fprintf(os.Stderr, "round %d %s c=%d %-13s %8.1f/s p50 %v p99 %v cpu %v backend %v%s errors %s %s\n", r+1, proto, k.conc, name, lr.Rate(), lr.P50.Round(10*time.Microsecond), lr.P99.Round(10*time.Microsecond), lr.CPUPerLogin.Round(time.Microsecond), lr.BackendCPU.Round(time.Microsecond), share, lr.errString(), lr.FirstErr)
			}
		}
	}
	fmt.Fprintf(w, "\n## logins (connect, TLS handshake, login, logout)\n\n")
	fmt.Fprintf(w, "| proto | conc | TLS resumption | target | logins/s | p50 | p90 | p99 | errors (all rounds) | proxy CPU/login | backend CPU/login | client CPU/login | all CPU/login | c/a | c/b | c/b by CPU | c/base |\n|---|---:|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, k := range runs {
		byT := res[k]
		med := map[string]float64{}
		all := map[string]float64{} // median over rounds of proxy + backend + client CPU per login
		for _, name := range e.names {
			if rs := byT[name]; len(rs) > 0 {
				med[name] = medianF(rs, func(r loginResult) float64 { return r.Rate() })
				all[name] = medianF(rs, func(r loginResult) float64 { return float64(r.CPUPerLogin + r.BackendCPU + r.ClientCPU) })
			}
		}
		for _, name := range e.names {
			rs := byT[name]
			if len(rs) == 0 {
				continue
			}
			m := summarize(rs, e.pids[name] != 0)
			ratioA, ratioB, ratioBase, ratioCPU := "", "", "", ""
			if name == tMailgate {
				ratioA, ratioB, ratioBase = ratio(med[tMailgate], med[tDirect]), ratio(med[tMailgate], med[tNginx]), ratio(med[tMailgate], med[tBase])
				// Rates on saturated cores go as the inverse of the CPU
				// all processes spend per login.
				ratioCPU = ratio(all[tNginx], all[tMailgate])
			}
			resume := "off"
			if k.resume {
				resume = fmt.Sprintf("on (%.0f%% resumed)", 100*median(resumed[k][name]))
			}
			proxy := m.cpu
			if name == tNginx && e.auth != nil {
				proxy += " (auth_http " + fmtDur(time.Duration(medianF(rs, func(r loginResult) float64 { return float64(r.AuthCPU) }))) + ")"
			}
			fmt.Fprintf(w, "| %s | %d | %s | %s | %.1f | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", k.proto, k.conc, resume, name, med[name],
				m.p50, m.p90, m.p99, m.errs, proxy, m.backendCPU, m.clientCPU, fmtDur(time.Duration(all[name])), ratioA, ratioB, ratioCPU, ratioBase)
		}
	}
	fmt.Fprintf(w, "\nc/a: mailgate ÷ Dovecot with TLS; c/b: mailgate ÷ nginx mail proxy; c/base: mailgate ÷ mailgate-base (-base), logins/s. Proxy CPU/login is the proxy's own process tree (nginx: master and workers, plus its auth_http endpoint, a process of its own, given in brackets). Backend CPU/login is every Dovecot and every Postfix process, reaped children included, per login of the run. Client CPU/login is the load generator (this process). All: the three summed; c/b by CPU: nginx's all ÷ mailgate's, the rate ratio the CPU alone predicts once the cores are saturated. TLS resumption on: each client worker keeps the session (TLS 1.3 ticket) of its last connection and offers it on the next, as mail clients do; the share of handshakes that resumed is given. SMTP: direct is Postfix smtps with SASL through Dovecot; nginx hands the session to Postfix with XCLIENT after auth_http said OK, and its auth_http checks the password by an IMAP LOGIN against Dovecot, as the PHP script mailgate replaces did (-nginx-smtp-noverify: it checks nothing).\n")
	if rs := res[key{"imap", slices.Max(o.concs), false}][tNginx]; len(rs) > 0 {
		return medianF(rs, func(r loginResult) float64 { return r.Rate() })
	}
	return 0
}

// runSummary is one target's runs over the rounds, formatted: medians
// of the latencies and CPU figures, error counts summed.
type runSummary struct {
	p50, p90, p99   string
	cpu, backendCPU string // cpu "-" when the target's process is not watched
	clientCPU       string
	errs            string
}

func summarize(rs []loginResult, watched bool) runSummary {
	dur := func(f func(loginResult) time.Duration) string {
		return fmtDur(time.Duration(medianF(rs, func(r loginResult) float64 { return float64(f(r)) })))
	}
	errs := map[string]int{}
	for _, r := range rs {
		for k, v := range r.Errors {
			errs[k] += v
		}
	}
	m := runSummary{
		p50:        dur(func(r loginResult) time.Duration { return r.P50 }),
		p90:        dur(func(r loginResult) time.Duration { return r.P90 }),
		p99:        dur(func(r loginResult) time.Duration { return r.P99 }),
		cpu:        "-",
		backendCPU: dur(func(r loginResult) time.Duration { return r.BackendCPU }),
		clientCPU:  dur(func(r loginResult) time.Duration { return r.ClientCPU }),
		errs:       loginResult{Errors: errs}.errString(),
	}
	if watched {
		m.cpu = dur(func(r loginResult) time.Duration { return r.CPUPerLogin })
	}
	return m
}

// suitePaced offers every target the same IMAPS login rate (open loop,
// at most the highest -c sessions at once) and compares latencies. The
// closed-loop p99 at high concurrency mixes speed with queueing: a
// proxy that answers sooner gets the next login sooner and so keeps
// more of them queued for the shared CPU. At one offered load, below
// every target's capacity, the latencies compare like for like.
func suitePaced(ctx context.Context, w io.Writer, e *stackEnv, o suiteOpts, nginxRate float64) {
	conc := slices.Max(o.concs)
	rate := o.pacedRate
	if rate == 0 {
		rate = 0.9 * nginxRate
	}
	fmt.Fprintf(w, "\n## paced IMAPS logins (the same offered rate for every target, at most %d at once)\n\n", conc)
	if rate <= 0 {
		fmt.Fprintf(w, "Skipped: no rate (nginx's closed-loop rate was not measured; set -paced-rate).\n")
		return
	}
	res := map[string][]loginResult{}
	for r := range o.rounds {
		for _, name := range e.rotate(r) {
			t, ok := e.target(name, "imap", o)
			if !ok {
				continue
			}
			lr := runPaced(ctx, conc, rate, o.dur, func(ctx context.Context) error { return loginOnce(ctx, "imap", t) }, e.cpuOf(name), e.backendCPU)
			res[name] = append(res[name], lr)
			fmt.Fprintf(os.Stderr, "round %d paced %.0f/s %-8s served %8.1f/s p50 %v p99 %v errors %s %s\n", r+1, rate, name, lr.Rate(), lr.P50.Round(10*time.Microsecond), lr.P99.Round(10*time.Microsecond), lr.errString(), lr.FirstErr)
		}
	}
	fmt.Fprintf(w, "offered: %.1f logins/s for %s per round\n\n", rate, o.dur)
	fmt.Fprintf(w, "| target | served/s | p50 | p90 | p99 | errors (all rounds) | proxy CPU/login | p99 c/a | p99 c/b |\n|---|---:|---:|---:|---:|---|---:|---:|---:|\n")
	p99 := map[string]float64{}
	for _, name := range e.names {
		if rs := res[name]; len(rs) > 0 {
			p99[name] = medianF(rs, func(r loginResult) float64 { return float64(r.P99) })
		}
	}
	for _, name := range e.names {
		rs := res[name]
		if len(rs) == 0 {
			continue
		}
		m := summarize(rs, e.pids[name] != 0)
		ra, rb := "", ""
		if name == tMailgate {
			ra, rb = ratio(p99[tMailgate], p99[tDirect]), ratio(p99[tMailgate], p99[tNginx])
		}
		fmt.Fprintf(w, "| %s | %.1f | %s | %s | %s | %s | %s | %s | %s |\n", name, medianF(rs, func(r loginResult) float64 { return r.Rate() }),
			m.p50, m.p90, m.p99, m.errs, m.cpu, ra, rb)
	}
	fmt.Fprintf(w, "\nLatency counts from when a login was due, so a target that falls behind shows it; logins still waiting for one of the %d slots at the end are counted as unserved. p99 c/b below 1: mailgate's tail is shorter than nginx's at the same load.\n", conc)
}

func writeProfileTop(w io.Writer, bin, prof string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-nodecount=30", bin, prof).CombinedOutput()
	if err != nil {
		warnf("go tool pprof: %v", err)
	}
	_ = os.WriteFile(prof+".top.txt", out, 0o644)
	out2, _ := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-cum", "-nodecount=40", bin, prof).CombinedOutput()
	_ = os.WriteFile(prof+".cum.txt", out2, 0o644)
	fmt.Fprintf(w, "\n(CPU profile of mailgate during the highest-concurrency IMAPS logins run: %s, top in %s.top.txt and %s.cum.txt)\n", prof, prof, prof)
}

func suiteThroughput(ctx context.Context, w io.Writer, e *stackEnv, o suiteOpts) {
	msg := message(o.size)
	app, fet := map[string][]float64{}, map[string][]float64{}
	errs := map[string][]string{}
	for r := range o.xferReps {
		for _, name := range e.rotate(r) {
			t, ok := e.target(name, "imap", o)
			if !ok {
				continue
			}
			xr, err := runTransfer(ctx, t, msg)
			if err != nil {
				errs[name] = append(errs[name], err.Error())
				warnf("throughput %s: %v", name, err)
				continue
			}
			app[name] = append(app[name], mbps(xr.Size, xr.Append))
			fet[name] = append(fet[name], mbps(xr.Size, xr.Fetch))
			fmt.Fprintf(os.Stderr, "throughput %s: APPEND %.1f MB/s FETCH %.1f MB/s\n", name, mbps(xr.Size, xr.Append), mbps(xr.Size, xr.Fetch))
		}
	}
	fmt.Fprintf(w, "\n## throughput (one IMAPS session: APPEND then FETCH BODY.PEEK[] of a %.1f MB message, bytes checked by SHA-256)\n\n", float64(len(msg))/1e6)
	fmt.Fprintf(w, "| target | APPEND MB/s | FETCH MB/s | runs | errors | c/a APPEND | c/b APPEND | c/a FETCH | c/b FETCH |\n|---|---:|---:|---:|---|---:|---:|---:|---:|\n")
	m := func(xs []float64) float64 { return median(xs) }
	for _, name := range e.names {
		if len(app[name]) == 0 && len(errs[name]) == 0 {
			continue
		}
		var ra, rb, fa, fb string
		if name == tMailgate {
			ra, rb = ratio(m(app[tMailgate]), m(app[tDirect])), ratio(m(app[tMailgate]), m(app[tNginx]))
			fa, fb = ratio(m(fet[tMailgate]), m(fet[tDirect])), ratio(m(fet[tMailgate]), m(fet[tNginx]))
		}
		fmt.Fprintf(w, "| %s | %.1f | %.1f | %d | %d | %s | %s | %s | %s |\n", name, m(app[name]), m(fet[name]), len(app[name]), len(errs[name]), ra, rb, fa, fb)
	}
}

// idleFigures is one idle measurement against one target.
type idleFigures struct {
	target         string
	k, open        int
	rss0, rss1     int64 // KiB
	gor0, gor1     float64
	heap0, heap1   float64 // mailgate's go_memstats_heap_inuse_bytes
	stack0, stack1 float64 // mailgate's go_memstats_stack_inuse_bytes
	// After two collections and a pause (settle): what an idle period
	// reaches, since the runtime collects at least every two minutes.
	rss2, heap2, stack2 float64
	// idleNatural after the sessions opened, nothing forced: what an
	// admin sees while sessions sit idle (0 when not measured).
	rssN, heapN, stackN float64
	openErrs, closeErrs map[string]int
	openTime            time.Duration
}

func measureIdle(ctx context.Context, e *stackEnv, name string, k int, o suiteOpts) (idleFigures, bool) {
	if _, ok := e.target(name, "imap", o); ok && o.idleFresh {
		if err := e.restart(ctx, name, o); err != nil {
			warnf("%v", err)
		}
	}
	t, ok := e.target(name, "imap", o)
	if !ok {
		return idleFigures{}, false
	}
	f := idleFigures{target: name, k: k}
	pid := e.pids[name]
	rss := func() int64 {
		if pid == 0 {
			return treeRSS(e.st.DovecotPID())
		}
		if name == tNginx {
			return treeRSS(pid)
		}
		return rssKiB(pid)
	}
	ports := e.mgPorts
	if name == tBase {
		ports = e.basePorts
	}
	isMG := name == tMailgate || name == tBase
	metrics := fmt.Sprintf("http://%s/metrics", mailstack.Addr(ports.Admin))
	runtime.GC()
	time.Sleep(time.Second)
	f.rss0 = rss()
	if isMG {
		f.gor0, _ = metric(ctx, metrics, "go_goroutines")
		f.heap0, _ = metric(ctx, metrics, "go_memstats_heap_inuse_bytes")
		f.stack0, _ = metric(ctx, metrics, "go_memstats_stack_inuse_bytes")
	}
	t0 := time.Now()
	cs, errs := idleSessions(ctx, t, k, 64)
	f.openTime = time.Since(t0)
	f.open, f.openErrs = len(cs), errs
	time.Sleep(2 * time.Second) // let the proxy finish its post-login work
	f.rss1 = rss()
	if isMG {
		f.gor1, _ = metric(ctx, metrics, "go_goroutines")
		f.heap1, _ = metric(ctx, metrics, "go_memstats_heap_inuse_bytes")
		f.stack1, _ = metric(ctx, metrics, "go_memstats_stack_inuse_bytes")
		if o.idleNatural > 0 {
			time.Sleep(o.idleNatural - time.Since(t0) + f.openTime)
			f.rssN = float64(rss())
			f.heapN, _ = metric(ctx, metrics, "go_memstats_heap_inuse_bytes")
			f.stackN, _ = metric(ctx, metrics, "go_memstats_stack_inuse_bytes")
		}
		// Where the per-session memory is: a heap profile while idle.
		prof := filepath.Join(o.out, fmt.Sprintf("%s-idle-%d.heap.pprof", name, k))
		if err := fetchFile(ctx, fmt.Sprintf("http://%s/debug/pprof/heap?gc=1", mailstack.Addr(ports.Pprof)), prof); err != nil {
			warnf("heap profile: %v", err)
		} else {
			out, _ := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-sample_index=inuse_space", "-nodecount=25", e.mgBin, prof).CombinedOutput()
			_ = os.WriteFile(prof+".top.txt", out, 0o644)
		}
		// The profile's ?gc=1 was one collection; a second one shrinks
		// the stacks grown during handshakes again (the runtime halves a
		// stack using under a quarter of it at each collection).
		_ = fetchFile(ctx, fmt.Sprintf("http://%s/debug/pprof/heap?gc=1", mailstack.Addr(ports.Pprof)), prof+".2")
		_ = os.Remove(prof + ".2")
		time.Sleep(o.settle)
		f.rss2 = float64(rss())
		f.heap2, _ = metric(ctx, metrics, "go_memstats_heap_inuse_bytes")
		f.stack2, _ = metric(ctx, metrics, "go_memstats_stack_inuse_bytes")
	}
	f.closeErrs = endIdle(cs, o.step, 64)
	time.Sleep(time.Second)
	return f, true
}

func suiteIdle(ctx context.Context, w io.Writer, e *stackEnv, o suiteOpts) {
	fmt.Fprintf(w, "\n## idle IMAPS sessions (login, SELECT INBOX, IDLE; memory read from /proc/<pid>/status VmRSS before and after)\n\n")
	fmt.Fprintf(w, "| target | sessions | opened | open errors | close errors | RSS before | RSS after | per session | goroutines per session | heap / stacks per session | %s per session, nothing forced | settled per session | time to open |\n|---|---:|---:|---|---|---:|---:|---:|---:|---|---|---|---:|\n", o.idleNatural)
	row := func(f idleFigures) {
		per := "-"
		if f.open > 0 {
			per = fmt.Sprintf("%.1f KiB", float64(f.rss1-f.rss0)/float64(f.open))
		}
		gor := "-"
		isMG := f.target == tMailgate || f.target == tBase
		if isMG && f.open > 0 && f.gor1 > 0 {
			gor = fmt.Sprintf("%.2f", (f.gor1-f.gor0)/float64(f.open))
		}
		mem, natural, settled := "-", "-", "-"
		if isMG && f.open > 0 && f.heap1 > 0 {
			n := float64(f.open)
			mem = fmt.Sprintf("%.1f / %.1f KiB", (f.heap1-f.heap0)/1024/n, (f.stack1-f.stack0)/1024/n)
			settled = fmt.Sprintf("%.1f KiB (heap %.1f, stacks %.1f)", (f.rss2-float64(f.rss0))/n,
				(f.heap2-f.heap0)/1024/n, (f.stack2-f.stack0)/1024/n)
			if f.rssN > 0 {
				natural = fmt.Sprintf("%.1f KiB (heap %.1f, stacks %.1f)", (f.rssN-float64(f.rss0))/n,
					(f.heapN-f.heap0)/1024/n, (f.stackN-f.stack0)/1024/n)
			}
		}
		fmt.Fprintf(w, "| %s | %d | %d | %s | %s | %.1f MiB | %.1f MiB | %s | %s | %s | %s | %s | %s |\n", f.target, f.k, f.open,
			loginResult{Errors: f.openErrs}.errString(), loginResult{Errors: f.closeErrs}.errString(),
			float64(f.rss0)/1024, float64(f.rss1)/1024, per, gor, mem, natural, settled, f.openTime.Round(time.Millisecond))
	}
	for _, name := range []string{tNginx, tMailgate, tBase, tDirect} {
		if o.idle == 0 {
			break
		}
		if f, ok := measureIdle(ctx, e, name, o.idle, o); ok {
			row(f)
		}
	}
	if o.idleBig > 0 {
		for _, name := range []string{tNginx, tMailgate, tBase} {
			if f, ok := measureIdle(ctx, e, name, o.idleBig, o); ok {
				row(f)
			}
		}
	}
	if o.idleNote != "" {
		fmt.Fprintf(w, "\nNote: %s.\n", o.idleNote)
	}
	if o.idleFresh {
		fmt.Fprintf(w, "\nnginx and mailgate were started afresh before each measurement (-idle-fresh): RSS before is a new process's.\n")
	} else {
		fmt.Fprintf(w, "\nnginx and mailgate went on from the steps before (-idle-fresh=false): a process that kept an earlier step's memory shows less growth.\n")
	}
	fmt.Fprintf(w, "\nnginx: master and workers summed. dovecot: every Dovecot process summed (shared pages counted once per process, so an overstatement; Dovecot keeps TLS in imap-login processes). mailgate: one process; goroutines, heap in use and goroutine stacks from go_goroutines, go_memstats_heap_inuse_bytes and go_memstats_stack_inuse_bytes on its /metrics.\n")
}

func suiteDenied(ctx context.Context, w io.Writer, e *stackEnv, o suiteOpts) {
	fmt.Fprintf(w, "\n## refusals through mailgate (CPU per attempt of the mailgate process)\n\n| what | attempts/s | attempts | errors | mailgate CPU per attempt |\n|---|---:|---:|---|---:|\n")
	t, _ := e.target(tMailgate, "imap", o)
	denied := t
	denied.local = []byte{127, 0, 0, 2} // RU by override: denied by country
	once := func(ctx context.Context) error {
		err := loginOnce(ctx, "imap", denied)
		if errKind(err) == kindRejected {
			return nil
		}
		if err == nil {
			return &stepError{kindProtocol, errors.New("denied source was let in")}
		}
		return err
	}
	lr := runLogins(ctx, 64, o.dur, 0, once, e.cpuOf(tMailgate), nil)
	fmt.Fprintf(w, "| IMAPS login denied by country (TLS handshake, LOGIN, decision, NO after limits.auth_failure_delay; no backend contact), 64 clients | %.1f | %d | %s | %s |\n", lr.Rate(), lr.OK, lr.errString(), fmtDur(lr.CPUPerLogin))
	if !e.guard {
		fmt.Fprintf(w, "| refused at accept (guard.deny_networks) | not measured: this mailgate build has no guard section | | | |\n")
		return
	}
	refused := t
	refused.local = []byte{127, 0, 0, 3}
	prof := filepath.Join(o.out, "mailgate-refused.pprof")
	profDone := make(chan error, 1)
	go func() {
		profDone <- fetchFile(ctx, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", mailstack.Addr(e.mgPorts.Pprof), max(int(o.dur.Seconds())-1, 1)), prof)
	}()
	lr = runLogins(ctx, 8, o.dur, 0, func(ctx context.Context) error { return refusedOnce(ctx, refused) }, e.cpuOf(tMailgate), nil)
	if err := <-profDone; err != nil {
		warnf("CPU profile of the refused run: %v", err)
	} else {
		writeProfileTop(io.Discard, e.mgBin, prof)
	}
	fmt.Fprintf(w, "| connection from a denied network, closed before TLS, 8 clients | %.1f | %d | %s | %s |\n", lr.Rate(), lr.OK, lr.errString(), fmtDur(lr.CPUPerLogin))
	fmt.Fprintf(w, "\nCPU is read from /proc/<pid>/stat in 10 ms ticks over the whole run and divided by the attempts; it includes the kernel's accept and close work charged to mailgate.\n")
}

func medianF[T any](xs []T, f func(T) float64) float64 {
	v := make([]float64, len(xs))
	for i, x := range xs {
		v[i] = f(x)
	}
	return median(v)
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func ratio(a, b float64) string {
	if a == 0 || b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", a/b)
}

func fmtDur(d time.Duration) string {
	switch {
	case d == 0:
		return "-"
	case d < time.Millisecond:
		return fmt.Sprintf("%.0f µs", float64(d)/1e3)
	default:
		return fmt.Sprintf("%.2f ms", float64(d)/1e6)
	}
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 5000 {
			return nil, fmt.Errorf("%q: want integers 1..5000", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// parseSize reads "20MB", "512KB", "1000" (bytes), decimal units; at
// most 1 GB.
func parseSize(s string) (int, error) {
	mult := 1
	u := strings.ToUpper(strings.TrimSpace(s))
	for _, suf := range []struct {
		s string
		m int
	}{{"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1}} {
		if strings.HasSuffix(u, suf.s) {
			mult, u = suf.m, strings.TrimSuffix(u, suf.s)
			break
		}
	}
	n, err := strconv.Atoi(strings.TrimSpace(u))
	if err != nil || n <= 0 || n*mult > 1e9 {
		return 0, fmt.Errorf("%q: want a size like 20MB, at most 1GB", s)
	}
	return n * mult, nil
}
