//go:build integration

package integration

import (
	"bufio"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// cmdRelay forwards TCP connections to a backend and records the name
// of every command mailgate sends before the login (up to and including
// AUTH or PASS); it records no argument but EHLO's host name, so no
// password.
type cmdRelay struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cmds   []string
}

func startCmdRelay(t testing.TB, target string) *cmdRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &cmdRelay{ln: ln, target: target}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go r.serve(c)
		}
	}()
	return r
}

func (r *cmdRelay) port() int { return r.ln.Addr().(*net.TCPAddr).Port }

func (r *cmdRelay) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.cmds...)
}

func (r *cmdRelay) serve(c net.Conn) {
	defer c.Close()
	b, err := net.DialTimeout("tcp", r.target, 5*time.Second)
	if err != nil {
		return
	}
	defer b.Close()
	go func() {
		io.Copy(c, b)
		c.Close()
	}()
	br := bufio.NewReader(io.LimitReader(c, 64<<10))
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			if _, werr := io.WriteString(b, line); werr != nil {
				return
			}
			name, arg, _ := strings.Cut(strings.TrimSpace(line), " ")
			name = strings.ToUpper(name)
			rec := name
			if name == "EHLO" {
				rec += " " + arg // a host name, nothing secret
			}
			r.mu.Lock()
			r.cmds = append(r.cmds, rec)
			r.mu.Unlock()
			if name == "AUTH" || name == "PASS" {
				break
			}
		}
		if err != nil {
			return
		}
	}
	io.Copy(b, br)
	io.Copy(b, c)
}

// TestPOP3CapaAskedOnce: behind mailgate the real Dovecot is asked CAPA
// on the first POP3 login only; the later logins send XCLIENT and AUTH
// in one write (Dovecot offers PIPELINING), and Dovecot still takes the
// client's address from every XCLIENT (issue #20).
func TestPOP3CapaAskedOnce(t *testing.T) {
	hs := need(t)
	relay := startCmdRelay(t, addr(hs.pop3Port))
	c := newCfg(t)
	c.BackendPOP3 = relay.port()
	m := startCfg(t, c)
	mark := len(hs.dovecotLog())
	const logins = 3
	for i := range logins {
		reply := pop3LoginRaw(t, "", m.Addr["pop3s-lb"], addrGB, "alice@example.test", "alicepass")
		if !strings.HasPrefix(reply, "+OK") {
			t.Fatalf("login %d = %q, want +OK", i+1, reply)
		}
	}
	count := func(name string) int {
		n := 0
		for _, c := range relay.all() {
			if c == name {
				n++
			}
		}
		return n
	}
	if n := count("CAPA"); n != 1 {
		t.Errorf("Dovecot was asked CAPA %d times for %d logins, want once (commands %q)", n, logins, relay.all())
	}
	if x, a := count("XCLIENT"), count("AUTH"); x != logins || a != logins {
		t.Errorf("XCLIENT %d, AUTH %d times, want %d each (commands %q)", x, a, logins, relay.all())
	}
	want := "Login: user=<alice@example.test>, method=PLAIN, rip=" + addrGB + ","
	seen := func() int {
		n := 0
		for _, l := range strings.Split(logSince(hs.dovecotLog(), mark), "\n") {
			if strings.Contains(l, "pop3-login:") && strings.Contains(l, want) {
				n++
			}
		}
		return n
	}
	if !waitFor(func() bool { return seen() == logins }, eventually) {
		t.Fatalf("Dovecot logged %d pop3 logins with rip=%s, want %d:\n%s", seen(), addrGB, logins, logSince(hs.dovecotLog(), mark))
	}
}
