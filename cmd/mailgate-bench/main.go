// Command mailgate-bench measures mailgate against the setup it replaces
// (nginx's mail proxy with auth_http) and against the mail server alone,
// with real protocol sessions over TLS.
//
// Subcommands:
//
//	suite       start Dovecot, Postfix, nginx and mailgate on loopback and
//	            run every measurement against all three, alternating
//	logins      N workers doing connect, TLS, login, logout for D seconds
//	throughput  APPEND then FETCH a large message, checking the bytes
//	idle        hold K authenticated IMAP sessions in IDLE
//
// docs/BENCHMARKS.md ("end to end") has the commands and the figures.
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

const usage = `usage: mailgate-bench <suite|logins|throughput|idle> [flags]
  suite       run every measurement against Dovecot, nginx and mailgate (needs root)
  logins      -addr host:port -proto imap|pop3|smtp -c 8 -d 10s
  throughput  -addr host:port -size 20MB -n 3
  idle        -addr host:port -k 1000 -pid PID
Run "mailgate-bench <subcommand> -h" for the flags.
`

func run(args []string, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "suite":
		return runSuite(args[1:])
	case "logins", "throughput", "idle":
		return runSingle(args[0], args[1:], stderr)
	case "authhttp": // the suite's own auth_http endpoint for nginx, not in the usage
		return runAuthHTTP(args[1:], stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stderr, usage)
		return 0
	}
	fmt.Fprintf(stderr, "mailgate-bench: unknown subcommand %q\n%s", args[0], usage)
	return 2
}

// runSingle runs one measurement against a server that is already up.
func runSingle(cmd string, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "", "server host:port (loopback unless -remote)")
	remote := fs.Bool("remote", false, "allow a server that is not on loopback (only on machines you run)")
	proto := fs.String("proto", "imap", "logins: imap, pop3 or smtp")
	plain := fs.Bool("plain", false, "no TLS (default: implicit TLS)")
	user := fs.String("user", "alice@example.test", "login")
	pass := fs.String("pass", "alicepass", "password")
	source := fs.String("source", "", "local source address to bind (e.g. 127.0.0.2)")
	conc := fs.Int("c", 8, "logins: concurrent workers")
	dur := fs.Duration("d", 10*time.Second, "logins: run time")
	count := fs.Int64("n", 0, "logins: stop after this many sessions (0: time only); throughput: repetitions")
	size := fs.String("size", "20MB", "throughput: message size")
	k := fs.Int("k", 1000, "idle: sessions")
	hold := fs.Duration("hold", 5*time.Second, "idle: how long to hold the sessions")
	pid := fs.Int("pid", 0, "pid of the server, to read its CPU (logins) or VmRSS (idle)")
	metrics := fs.String("metrics", "", "idle: Prometheus URL with go_goroutines (mailgate's admin /metrics)")
	step := fs.Duration("step", 10*time.Second, "deadline of each network step")
	resume := fs.Bool("resume", false, "logins: each worker offers the TLS session of its last connection (session tickets)")
	x25519 := fs.Bool("x25519", false, "offer only X25519 (default: Go's key exchanges, X25519MLKEM768 first)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := checkAddr(*addr, *remote); err != nil {
		fmt.Fprintln(stderr, "mailgate-bench:", err)
		return 2
	}
	if *conc < 1 || *conc > 5000 || *dur <= 0 || *dur > time.Hour || *k < 1 || *k > 50000 || *hold > time.Hour {
		fmt.Fprintln(stderr, "mailgate-bench: -c 1..5000, -d up to 1h, -k 1..50000, -hold up to 1h")
		return 2
	}
	t := target{addr: *addr, tls: !*plain, user: *user, pass: *pass, step: *step}
	if *x25519 {
		t.curves = []tls.CurveID{tls.X25519}
	}
	if *resume {
		t.resume = newResumption()
	}
	if *source != "" {
		if t.local = net.ParseIP(*source); t.local == nil {
			fmt.Fprintf(stderr, "mailgate-bench: -source %q is not an IP address\n", *source)
			return 2
		}
	}
	ctx := context.Background()
	var cpu func() time.Duration
	if *pid > 0 {
		cpu = func() time.Duration { return treeCPU(*pid) }
	}
	switch cmd {
	case "logins":
		p := *proto
		if p != "imap" && p != "pop3" && p != "smtp" {
			fmt.Fprintln(stderr, "mailgate-bench: -proto imap, pop3 or smtp")
			return 2
		}
		r := runLogins(ctx, *conc, *dur, *count, func(ctx context.Context) error { return loginOnce(ctx, p, t) }, cpu, nil)
		fmt.Printf("%s c=%d: %d logins in %s = %.1f/s; p50 %s p90 %s p99 %s; errors %s; server CPU per login %s\n",
			p, *conc, r.OK, r.Elapsed.Round(time.Millisecond), r.Rate(), fmtDur(r.P50), fmtDur(r.P90), fmtDur(r.P99), r.errString(), fmtDur(r.CPUPerLogin))
		if t.resume != nil {
			fmt.Printf("TLS sessions resumed: %.1f%% of handshakes\n", 100*t.resume.share())
		}
		if r.FirstErr != "" {
			fmt.Printf("first error: %s\n", r.FirstErr)
		}
		if r.OK == 0 {
			return 1
		}
	case "throughput":
		n, err := parseSize(*size)
		if err != nil {
			fmt.Fprintln(stderr, "mailgate-bench:", err)
			return 2
		}
		msg := message(n)
		reps := max(min(*count, 100), 1)
		for range reps {
			xr, err := runTransfer(ctx, t, msg)
			if err != nil {
				fmt.Fprintln(stderr, "mailgate-bench:", err)
				return 1
			}
			fmt.Printf("%d bytes: APPEND %.1f MB/s, FETCH %.1f MB/s (bytes checked)\n", xr.Size, mbps(xr.Size, xr.Append), mbps(xr.Size, xr.Fetch))
		}
	case "idle":
		raiseNoFile(uint64(*k) + 1000)
		var rss0 int64
		var g0 float64
		if *pid > 0 {
			rss0 = rssKiB(*pid)
		}
		if *metrics != "" {
			g0, _ = metric(ctx, *metrics, "go_goroutines")
		}
		cs, errs := idleSessions(ctx, t, *k, 64)
		fmt.Printf("%d of %d sessions in IDLE; open errors %s\n", len(cs), *k, loginResult{Errors: errs}.errString())
		time.Sleep(*hold)
		if *pid > 0 && len(cs) > 0 {
			rss1 := rssKiB(*pid)
			fmt.Printf("server VmRSS %.1f MiB → %.1f MiB: %.1f KiB per session\n", float64(rss0)/1024, float64(rss1)/1024, float64(rss1-rss0)/float64(len(cs)))
		}
		if *metrics != "" && len(cs) > 0 {
			if g1, ok := metric(ctx, *metrics, "go_goroutines"); ok {
				fmt.Printf("goroutines %.0f → %.0f: %.2f per session\n", g0, g1, (g1-g0)/float64(len(cs)))
			}
		}
		cerrs := endIdle(cs, *step, 64)
		fmt.Printf("closed; sessions that did not end cleanly: %s\n", loginResult{Errors: cerrs}.errString())
	}
	return 0
}

// checkAddr refuses targets off loopback unless remote is set: our own
// runs, and anyone's by default, never load a machine by accident.
func checkAddr(addr string, remote bool) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("-addr %q: %w", addr, err)
	}
	if remote {
		return nil
	}
	if strings.EqualFold(host, "localhost") {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("-addr %q is not a loopback address; pass -remote to load another machine you run", addr)
	}
	return nil
}
