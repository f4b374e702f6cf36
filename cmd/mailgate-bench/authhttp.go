package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mailgate/mailgate/integration/mailstack"
)

// authHTTP is nginx's auth_http endpoint: every IMAP and POP3 login is
// OK and goes to the backend for its protocol, which then checks the
// password itself (nginx logs in with the user's credentials). nginx
// hands an SMTP session to Postfix with XCLIENT and no password, so a
// real deployment's auth_http must check SMTP passwords itself: with
// verify set it does, by an IMAP LOGIN against Dovecot, as the PHP
// script mailgate replaces did. It answers from memory otherwise, so it
// measures nginx, not PHP.
type authHTTP struct {
	ports  map[string]int // Auth-Protocol ("imap", "pop3", "smtp") → backend port
	verify string         // plain IMAP address that checks SMTP passwords ("": none)
	step   time.Duration  // deadline of each step of that check
}

func (a *authHTTP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	proto := r.Header.Get("Auth-Protocol")
	port, ok := a.ports[proto]
	if !ok {
		w.Header().Set("Auth-Status", "unknown protocol")
		return
	}
	if proto == "smtp" && a.verify != "" {
		// nginx escapes the name and password it passes (%XX).
		user, err1 := url.PathUnescape(r.Header.Get("Auth-User"))
		pass, err2 := url.PathUnescape(r.Header.Get("Auth-Pass"))
		if err1 != nil || err2 != nil || user == "" {
			w.Header().Set("Auth-Status", "Invalid login or password")
			return
		}
		t := target{addr: a.verify, user: user, pass: pass, step: a.step}
		if err := loginOnce(r.Context(), "imap", t); err != nil {
			w.Header().Set("Auth-Status", "Invalid login or password")
			w.Header().Set("Auth-Wait", "3")
			return
		}
	}
	w.Header().Set("Auth-Status", "OK")
	w.Header().Set("Auth-Server", "127.0.0.1")
	w.Header().Set("Auth-Port", strconv.Itoa(port))
}

// runAuthHTTP is the hidden "authhttp" subcommand: the suite runs the
// auth_http endpoint as a process of its own, so that its CPU counts
// with nginx's (mailgate's policy decision counts in mailgate's) and
// not with the load generator's. It serves until SIGTERM.
func runAuthHTTP(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("authhttp", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "", "loopback address to serve on")
	ports := fs.String("ports", "", "backend ports, e.g. imap=143,pop3=110,smtp=25")
	a := &authHTTP{ports: map[string]int{}}
	fs.StringVar(&a.verify, "verify-smtp", "", "plain IMAP address that checks SMTP passwords by LOGIN (empty: every login is OK)")
	fs.DurationVar(&a.step, "step", 10*time.Second, "deadline of each step of that check")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	for _, kv := range strings.Split(*ports, ",") {
		k, v, ok := strings.Cut(kv, "=")
		n, err := strconv.Atoi(v)
		if !ok || err != nil || n <= 0 || n > 65535 {
			fmt.Fprintf(stderr, "authhttp: -ports: %q is not proto=port\n", kv)
			return 2
		}
		a.ports[k] = n
	}
	addrs := []string{*listen}
	if a.verify != "" {
		addrs = append(addrs, a.verify)
	}
	for _, addr := range addrs {
		if err := checkAddr(addr, false); err != nil {
			fmt.Fprintf(stderr, "authhttp: %v\n", err)
			return 2
		}
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(stderr, "authhttp: %v\n", err)
		return 1
	}
	srv := &http.Server{Handler: a, ReadHeaderTimeout: 5 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() { <-ctx.Done(); srv.Close() }()
	if err := srv.Serve(l); err != nil && err != http.ErrServerClosed {
		fmt.Fprintf(stderr, "authhttp: %v\n", err)
		return 1
	}
	return 0
}

// startAuthHTTP runs this binary's authhttp subcommand on port for
// nginx. verify: check SMTP passwords against Dovecot's plain IMAP.
func startAuthHTTP(dir string, st *mailstack.Stack, port int, verify bool, step time.Duration) (*proc, string, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, "", err
	}
	addr := mailstack.Addr(port)
	args := []string{"authhttp", "-listen", addr, "-step", step.String(),
		"-ports", fmt.Sprintf("imap=%d,pop3=%d,smtp=%d", st.IMAP, st.POP3, st.SMTP)}
	if verify {
		args = append(args, "-verify-smtp", mailstack.Addr(st.IMAP))
	}
	p, err := startProc("auth_http", filepath.Join(dir, "authhttp.out"), nil, self, args...)
	if err != nil {
		return nil, "", err
	}
	if err := p.waitPorts(addr); err != nil {
		p.stop(syscall.SIGTERM)
		return nil, "", err
	}
	return p, addr, nil
}
