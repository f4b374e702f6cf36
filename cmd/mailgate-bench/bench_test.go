package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailgate/mailgate/integration/mailstack"
	"github.com/mailgate/mailgate/integration/testport"
)

// fakeServer accepts TLS connections on loopback and runs handle on
// each with a line reader; it stops with the test.
func fakeServer(t *testing.T, useTLS bool, handle func(r *bufio.Reader, w io.Writer)) string {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var cfg *tls.Config
	if useTLS {
		dir := t.TempDir()
		cert, key := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
		if err := mailstack.SelfSigned(cert, key, "mail.example.test"); err != nil {
			t.Fatal(err)
		}
		kp, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			t.Fatal(err)
		}
		cfg = &tls.Config{Certificates: []tls.Certificate{kp}}
	}
	go func() {
		for {
			nc, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer nc.Close()
				_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
				if cfg != nil {
					tc := tls.Server(nc, cfg)
					if tc.Handshake() != nil {
						return
					}
					nc = tc
				}
				handle(bufio.NewReader(nc), nc)
			}()
		}
	}()
	return l.Addr().String()
}

// imapFake is a minimal IMAP server: it accepts LOGIN for one user and
// password (after unquoting, so quoting mistakes fail the login), and
// LOGOUT.
func imapFake(user, pass string) func(r *bufio.Reader, w io.Writer) {
	return func(r *bufio.Reader, w io.Writer) {
		fmt.Fprint(w, "* OK fake ready\r\n")
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				return
			}
			tag, rest, _ := strings.Cut(strings.TrimRight(l, "\r\n"), " ")
			switch {
			case strings.HasPrefix(rest, "LOGIN "):
				args := unquoteArgs(strings.TrimPrefix(rest, "LOGIN "))
				if len(args) == 2 && args[0] == user && args[1] == pass {
					fmt.Fprintf(w, "* CAPABILITY IMAP4rev1\r\n%s OK logged in\r\n", tag)
				} else {
					fmt.Fprintf(w, "%s NO [AUTHENTICATIONFAILED] bad\r\n", tag)
				}
			case rest == "LOGOUT":
				fmt.Fprintf(w, "* BYE\r\n%s OK bye\r\n", tag)
				return
			default:
				fmt.Fprintf(w, "%s BAD unknown\r\n", tag)
			}
		}
	}
}

// unquoteArgs splits IMAP quoted strings (RFC 9051 4.3).
func unquoteArgs(s string) []string {
	var out []string
	for len(s) > 0 {
		s = strings.TrimLeft(s, " ")
		if !strings.HasPrefix(s, `"`) {
			return nil
		}
		var b strings.Builder
		i := 1
		for ; i < len(s) && s[i] != '"'; i++ {
			if s[i] == '\\' && i+1 < len(s) {
				i++
			}
			b.WriteByte(s[i])
		}
		if i >= len(s) {
			return nil
		}
		out = append(out, b.String())
		s = s[i+1:]
	}
	return out
}

func TestLoginOnceIMAP(t *testing.T) {
	pass := `pa"ss\word`
	addr := fakeServer(t, true, imapFake("alice@example.test", pass))
	tg := target{addr: addr, tls: true, user: "alice@example.test", pass: pass, step: 5 * time.Second}
	if err := loginOnce(context.Background(), "imap", tg); err != nil {
		t.Fatalf("login with quotes and backslash in the password: %v", err)
	}
	tg.pass = "wrong"
	err := loginOnce(context.Background(), "imap", tg)
	if errKind(err) != kindRejected {
		t.Fatalf("wrong password: kind %q (%v), want %q", errKind(err), err, kindRejected)
	}
}

func TestLoginOncePOP3AndSMTP(t *testing.T) {
	pop := fakeServer(t, true, func(r *bufio.Reader, w io.Writer) {
		fmt.Fprint(w, "+OK ready\r\n")
		want := []string{"USER bob@example.test", "PASS bobpass", "QUIT"}
		for _, wl := range want {
			l, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if strings.TrimRight(l, "\r\n") != wl {
				fmt.Fprint(w, "-ERR no\r\n")
				return
			}
			fmt.Fprint(w, "+OK\r\n")
		}
	})
	smtp := fakeServer(t, true, func(r *bufio.Reader, w io.Writer) {
		fmt.Fprint(w, "220-mx\r\n220 mx ESMTP\r\n")
		plain := base64.StdEncoding.EncodeToString([]byte("\x00bob@example.test\x00bobpass"))
		for _, step := range []struct{ cmd, reply string }{
			{"EHLO bench.example.test", "250-mx\r\n250 AUTH PLAIN\r\n"},
			{"AUTH PLAIN " + plain, "235 ok\r\n"},
			{"QUIT", "221 bye\r\n"},
		} {
			l, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if strings.TrimRight(l, "\r\n") != step.cmd {
				fmt.Fprint(w, "535 no\r\n")
				return
			}
			fmt.Fprint(w, step.reply)
		}
	})
	for proto, addr := range map[string]string{"pop3": pop, "smtp": smtp} {
		tg := target{addr: addr, tls: true, user: "bob@example.test", pass: "bobpass", step: 5 * time.Second}
		if err := loginOnce(context.Background(), proto, tg); err != nil {
			t.Errorf("%s: %v", proto, err)
		}
		tg.pass = "nope"
		if err := loginOnce(context.Background(), proto, tg); errKind(err) != kindRejected {
			t.Errorf("%s wrong password: kind %q (%v), want rejected", proto, errKind(err), err)
		}
	}
}

func TestErrorKinds(t *testing.T) {
	// Nothing listens on a port held bound without listening: dial
	// error. (A port bound and closed again could be given to any port-0
	// bind meanwhile and then accept.)
	addr, closeFn, err := testport.Refused()
	if err != nil {
		t.Fatal(err)
	}
	defer closeFn()
	tg := target{addr: addr, tls: true, user: "u", pass: "p", step: 2 * time.Second}
	if err := loginOnce(context.Background(), "imap", tg); errKind(err) != kindDial {
		t.Errorf("closed port: kind %q (%v), want dial", errKind(err), err)
	}
	// A plaintext server where TLS is expected: handshake error.
	tg.addr = fakeServer(t, false, func(r *bufio.Reader, w io.Writer) { fmt.Fprint(w, "* OK plain\r\n") })
	if err := loginOnce(context.Background(), "imap", tg); errKind(err) != kindTLS {
		t.Errorf("plaintext server: kind %q (%v), want tls", errKind(err), err)
	}
	// A server that never answers: timeout.
	tg.addr = fakeServer(t, true, func(r *bufio.Reader, w io.Writer) { time.Sleep(3 * time.Second) })
	tg.step = 300 * time.Millisecond
	if err := loginOnce(context.Background(), "imap", tg); errKind(err) != kindTimeout {
		t.Errorf("silent server: kind %q (%v), want timeout", errKind(err), err)
	}
	// Greeting of the wrong protocol.
	tg.addr = fakeServer(t, true, func(r *bufio.Reader, w io.Writer) { fmt.Fprint(w, "+OK pop3\r\n") })
	tg.step = 2 * time.Second
	if err := loginOnce(context.Background(), "imap", tg); errKind(err) != kindProtocol {
		t.Errorf("POP3 greeting to IMAP: kind %q (%v), want protocol", errKind(err), err)
	}
	// An endless line is cut at maxLine, not read into memory forever.
	tg.addr = fakeServer(t, true, func(r *bufio.Reader, w io.Writer) {
		chunk := strings.Repeat("x", 4096)
		for range 2 * maxLine / 4096 {
			if _, err := io.WriteString(w, chunk); err != nil {
				return
			}
		}
	})
	if err := loginOnce(context.Background(), "imap", tg); errKind(err) != kindProtocol || !strings.Contains(err.Error(), "longer than") {
		t.Errorf("endless line: kind %q (%v), want protocol/longer than", errKind(err), err)
	}
}

// imapStore is a fake IMAP server holding one appended message; corrupt
// flips a byte of it in FETCH answers.
func imapStore(corrupt bool) func(r *bufio.Reader, w io.Writer) {
	return func(r *bufio.Reader, w io.Writer) {
		var stored []byte
		fmt.Fprint(w, "* OK fake\r\n")
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				return
			}
			tag, rest, _ := strings.Cut(strings.TrimRight(l, "\r\n"), " ")
			switch {
			case strings.HasPrefix(rest, "APPEND INBOX {"):
				n, ok := parseLiteral(rest)
				if !ok {
					fmt.Fprintf(w, "%s BAD\r\n", tag)
					continue
				}
				fmt.Fprint(w, "+ go\r\n")
				stored = make([]byte, n)
				if _, err := io.ReadFull(r, stored); err != nil {
					return
				}
				_, _ = r.ReadString('\n')
				fmt.Fprintf(w, "%s OK appended\r\n", tag)
			case strings.HasPrefix(rest, "FETCH * BODY.PEEK[]"):
				body := append([]byte(nil), stored...)
				if corrupt && len(body) > 100 {
					body[100] ^= 1
				}
				fmt.Fprintf(w, "* 1 FETCH (BODY[] {%d}\r\n", len(body))
				_, _ = w.Write(body)
				fmt.Fprintf(w, ")\r\n%s OK done\r\n", tag)
			case rest == "LOGOUT":
				fmt.Fprintf(w, "%s OK\r\n", tag)
				return
			default: // LOGIN, SELECT, STORE, EXPUNGE, NOOP
				fmt.Fprintf(w, "%s OK\r\n", tag)
			}
		}
	}
}

func TestTransferChecksBytes(t *testing.T) {
	msg := message(300_000)
	if len(msg) < 300_000 || !strings.HasSuffix(string(msg), "\r\n") {
		t.Fatalf("message: %d bytes, want at least 300000 ending in CRLF", len(msg))
	}
	good := target{addr: fakeServer(t, true, imapStore(false)), tls: true, user: "u", pass: "p", step: 5 * time.Second}
	res, err := runTransfer(context.Background(), good, msg)
	if err != nil {
		t.Fatalf("faithful server: %v", err)
	}
	if res.Size != len(msg) || res.Append <= 0 || res.Fetch <= 0 {
		t.Errorf("result %+v: want size %d and both times set", res, len(msg))
	}
	bad := good
	bad.addr = fakeServer(t, true, imapStore(true))
	if _, err := runTransfer(context.Background(), bad, msg); err == nil || !strings.Contains(err.Error(), "different bytes") {
		t.Fatalf("server flipping one bit: err %v, want a byte mismatch", err)
	}
}

func TestRunLoginsBoundsAndCounts(t *testing.T) {
	var calls atomic.Int64
	once := func(context.Context) error {
		n := calls.Add(1)
		switch n % 4 {
		case 0:
			return &stepError{kindRejected, errors.New("no")}
		case 1:
			return io.EOF
		}
		return nil
	}
	r := runLogins(context.Background(), 4, time.Minute, 1000, once, nil, nil)
	if got := calls.Load(); got != 1000 {
		t.Fatalf("%d sessions run, want exactly the count limit 1000", got)
	}
	if r.OK != 500 || r.Errors[kindRejected] != 250 || r.Errors[kindEOF] != 250 {
		t.Errorf("ok %d, errors %v; want 500 ok, 250 rejected, 250 eof", r.OK, r.Errors)
	}
	start := time.Now()
	r = runLogins(context.Background(), 2, 200*time.Millisecond, 0, func(context.Context) error { time.Sleep(time.Millisecond); return nil }, nil, nil)
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("a 200ms run took %v", el)
	}
	if r.OK == 0 || r.P50 <= 0 || r.P99 < r.P50 || r.Rate() <= 0 {
		t.Errorf("timed run: %+v", r)
	}
}

// The paced run offers sessions at its rate whatever the server does:
// a server that keeps up serves about rate × duration; one that cannot
// shows the wait in its latencies (counted from when each was due) and
// leaves the rest unserved, rather than being offered less.
func TestRunPacedOffersAtRateAndCountsTheWait(t *testing.T) {
	fast := func(context.Context) error { time.Sleep(time.Millisecond); return nil }
	r := runPaced(context.Background(), 4, 200, 500*time.Millisecond, fast, nil, nil)
	if r.OK < 60 || r.OK > 101 {
		t.Errorf("keeping up: %d served in 0.5 s at 200/s, want about 100", r.OK)
	}
	if r.Errors["unserved"] > 5 {
		t.Errorf("keeping up: %d unserved", r.Errors["unserved"])
	}

	// One worker, 20 ms per session, 200 offered per second: 4 × too slow.
	slow := func(context.Context) error { time.Sleep(20 * time.Millisecond); return nil }
	r = runPaced(context.Background(), 1, 200, 500*time.Millisecond, slow, nil, nil)
	if r.OK > 30 {
		t.Errorf("falling behind: %d served, more than one worker can do", r.OK)
	}
	if r.Errors["unserved"] < 40 {
		t.Errorf("falling behind: %d unserved, want the backlog counted", r.Errors["unserved"])
	}
	if r.P99 < 100*time.Millisecond {
		t.Errorf("falling behind: p99 %v, want the queueing counted (sessions wait hundreds of ms)", r.P99)
	}
}

func TestQuantileAndMedian(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i))
	}
	for q, want := range map[float64]time.Duration{0.5: 50, 0.9: 90, 0.99: 99, 1: 100} {
		if got := quantile(d, q); got != want {
			t.Errorf("quantile %.2f = %d, want %d", q, got, want)
		}
	}
	if quantile(nil, 0.5) != 0 {
		t.Error("quantile of nothing is not 0")
	}
	if m := median([]float64{3, 1, 2}); m != 2 {
		t.Errorf("median = %v", m)
	}
	if m := median([]float64{4, 1, 2, 3}); m != 2.5 {
		t.Errorf("even median = %v", m)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int{"20MB": 20e6, "512kb": 512e3, "1000": 1000, "1GB": 1e9} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "-5MB", "2GB", "lots", "99999999999999999999"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) accepted", in)
		}
	}
}

func TestParseLiteral(t *testing.T) {
	for in, want := range map[string]int64{"* 1 FETCH (BODY[] {20}": 20, "a APPEND INBOX {5+}": 5} {
		if n, ok := parseLiteral(in); !ok || n != want {
			t.Errorf("parseLiteral(%q) = %d, %v", in, n, ok)
		}
	}
	for _, in := range []string{"* 1 FETCH (FLAGS ())", "{-1}", "{x}", "}", "{}"} {
		if _, ok := parseLiteral(in); ok {
			t.Errorf("parseLiteral(%q) accepted", in)
		}
	}
}

func TestCheckAddr(t *testing.T) {
	for _, a := range []string{"127.0.0.1:993", "127.0.0.2:1", "[::1]:993", "localhost:993"} {
		if err := checkAddr(a, false); err != nil {
			t.Errorf("%s refused: %v", a, err)
		}
	}
	for _, a := range []string{"192.0.2.1:993", "mail.example.com:993", "[2001:db8::1]:993", "127.0.0.1"} {
		if err := checkAddr(a, false); err == nil {
			t.Errorf("%s accepted without -remote", a)
		}
	}
	if err := checkAddr("192.0.2.1:993", true); err != nil {
		t.Errorf("-remote: %v", err)
	}
}

func TestAuthHTTP(t *testing.T) {
	a := &authHTTP{ports: map[string]int{"imap": 1143, "smtp": 1025}}
	for proto, port := range map[string]string{"imap": "1143", "smtp": "1025"} {
		h := askAuth(a, proto, "alice@example.test", "anything")
		if h.Get("Auth-Status") != "OK" || h.Get("Auth-Server") != "127.0.0.1" || h.Get("Auth-Port") != port {
			t.Errorf("%s: headers %v", proto, h)
		}
	}
	if s := askAuth(a, "gopher", "alice@example.test", "x").Get("Auth-Status"); s == "OK" || s == "" {
		t.Errorf("unknown protocol: Auth-Status %q", s)
	}
}

// TestAuthHTTPVerifiesSMTP: with verify set, an SMTP login is OK only
// when the IMAP server takes the password (nginx escapes both names,
// so an escaped space and quote must arrive unescaped); IMAP logins
// are still passed to the backend unchecked.
func TestAuthHTTPVerifiesSMTP(t *testing.T) {
	imap := fakeServer(t, false, imapFake(`bob smith`, `pa"ss`))
	a := &authHTTP{ports: map[string]int{"imap": 1143, "smtp": 1025}, verify: imap, step: 5 * time.Second}
	if h := askAuth(a, "smtp", "bob%20smith", "pa%22ss"); h.Get("Auth-Status") != "OK" || h.Get("Auth-Port") != "1025" {
		t.Errorf("right password: %v", h)
	}
	h := askAuth(a, "smtp", "bob%20smith", "wrong")
	if h.Get("Auth-Status") == "OK" || h.Get("Auth-Wait") == "" {
		t.Errorf("wrong password: %v", h)
	}
	if h := askAuth(a, "smtp", "bob%zzsmith", "pa%22ss"); h.Get("Auth-Status") == "OK" {
		t.Errorf("undecodable name: %v", h)
	}
	if h := askAuth(a, "imap", "bob%20smith", "wrong"); h.Get("Auth-Status") != "OK" {
		t.Errorf("imap is the backend's to check: %v", h)
	}
}

func askAuth(a *authHTTP, proto, user, pass string) http.Header {
	req := httptest.NewRequest("GET", "/auth", nil)
	req.Header.Set("Auth-Protocol", proto)
	req.Header.Set("Auth-User", user)
	req.Header.Set("Auth-Pass", pass)
	rec := httptest.NewRecorder()
	a.ServeHTTP(rec, req)
	return rec.Result().Header
}

// TestAuthHTTPCommandFlags: the authhttp subcommand refuses to serve
// off loopback and says what a bad -ports is.
func TestAuthHTTPCommandFlags(t *testing.T) {
	var stderr strings.Builder
	if code := run([]string{"authhttp", "-listen", "192.0.2.1:80", "-ports", "imap=143"}, &stderr); code != 2 || !strings.Contains(stderr.String(), "loopback") {
		t.Errorf("non-loopback listen: code %d, %q", code, stderr.String())
	}
	stderr.Reset()
	if code := run([]string{"authhttp", "-listen", "127.0.0.1:0", "-ports", "imap"}, &stderr); code != 2 || !strings.Contains(stderr.String(), "proto=port") {
		t.Errorf("bad -ports: code %d, %q", code, stderr.String())
	}
}

func TestRefusedOnce(t *testing.T) {
	closer, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()
	go func() {
		for {
			c, err := closer.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	tg := target{addr: closer.Addr().String(), step: 2 * time.Second}
	if err := refusedOnce(context.Background(), tg); err != nil {
		t.Errorf("server closing at accept: %v", err)
	}
	tg.addr = fakeServer(t, false, func(r *bufio.Reader, w io.Writer) { fmt.Fprint(w, "* OK hello\r\n") })
	if err := refusedOnce(context.Background(), tg); err == nil {
		t.Error("server that greets counted as a refusal")
	}
}

func TestRunUsage(t *testing.T) {
	var b strings.Builder
	if code := run([]string{"nonsense"}, &b); code != 2 || !strings.Contains(b.String(), "unknown subcommand") {
		t.Errorf("unknown subcommand: code %d, %q", code, b.String())
	}
	b.Reset()
	if code := run([]string{"logins", "-addr", "192.0.2.1:993"}, &b); code != 2 || !strings.Contains(b.String(), "loopback") {
		t.Errorf("non-loopback target: code %d, %q", code, b.String())
	}
}
