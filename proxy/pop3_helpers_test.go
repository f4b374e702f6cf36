package proxy

// Test fakes for the POP3 and SMTP backends. The one fixture that runs
// them (testEnv, startServer) is in helpers_test.go.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"

	"github.com/mailgate/mailgate/backend"
	"github.com/mailgate/mailgate/policy"
)

// fakeLineBackend is an in-process POP3 or SMTP backend. users holds
// passwords; a logged-in session is a loopback TCP pair whose far end
// answers every line with echoPrefix+line and records it.
type fakeLineBackend struct {
	users      map[string]string
	reply      string // Session.Reply (POP3: the backend's +OK)
	echoPrefix string // "+OK echo " or "250 echo "

	mu          sync.Mutex       // guards the knobs below (set while sessions run) and the records
	unavailable bool             // every login fails with ErrUnavailable
	caps        []string         // Capabilities / Extensions
	capsErr     error            // returned by Capabilities / Extensions
	logins      []string         // "user\x00pass" per accepted login
	clients     []backend.Client // backend.Client per login call
	lines       chan string      // lines received after login
	script      func(net.Conn)   // runs a logged-in session instead of echo, when set
	ln          net.Listener     // backend side of logged-in sessions; see close
}

func newFakeLineBackend(reply, echoPrefix string, caps []string) *fakeLineBackend {
	return &fakeLineBackend{
		users: map[string]string{"alice": "secret", "bob": "secret", "carol": "pass with spaces"},
		reply: reply, echoPrefix: echoPrefix, caps: caps, lines: make(chan string, 1000),
	}
}

func (f *fakeLineBackend) login(c backend.Client, user, pass string) (*backend.Session, error) {
	f.mu.Lock()
	f.clients = append(f.clients, c)
	unavailable := f.unavailable
	f.mu.Unlock()
	if strings.ContainsAny(user+pass, "\r\n\x00") {
		return nil, fmt.Errorf("injection reached the backend: %q %q", user, pass)
	}
	if unavailable {
		return nil, fmt.Errorf("%w: %w: dial 127.0.0.1:1: connection refused", backend.ErrUnavailable, backend.ErrNoService)
	}
	if p, ok := f.users[user]; !ok || p != pass {
		return nil, fmt.Errorf("%w: -ERR [AUTH]", backend.ErrAuthFailed)
	}
	// One listener for all sessions: binding a new one per login costs
	// more than the whole session and would dominate the benchmarks.
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ln == nil {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		f.ln = ln
	}
	client, err := net.Dial("tcp", f.ln.Addr().String())
	if err != nil {
		return nil, err
	}
	server, err := f.ln.Accept()
	if err != nil {
		client.Close()
		return nil, err
	}
	f.logins = append(f.logins, user+"\x00"+pass)
	if f.script != nil {
		go f.script(server)
	} else {
		go f.echo(server)
	}
	var reply []byte
	if f.reply != "" {
		reply = []byte(f.reply)
	}
	return &backend.Session{Conn: client, Reply: reply}, nil
}

// echo answers each line until EOF or QUIT.
func (f *fakeLineBackend) echo(nc net.Conn) {
	defer nc.Close()
	br := bufio.NewReader(nc)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		select {
		case f.lines <- line:
		default:
		}
		if _, err := io.WriteString(nc, f.echoPrefix+line+"\r\n"); err != nil {
			return
		}
		if strings.EqualFold(line, "QUIT") {
			return
		}
	}
}

// close releases the listener.
func (f *fakeLineBackend) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ln != nil {
		f.ln.Close()
	}
}

// setUnavailable makes every login fail as a backend outage.
func (f *fakeLineBackend) setUnavailable(v bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.unavailable = v
}

// setCaps sets what Capabilities / Extensions return.
func (f *fakeLineBackend) setCaps(caps []string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.caps, f.capsErr = caps, err
}

func (f *fakeLineBackend) getCaps() ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.caps, f.capsErr
}

func (f *fakeLineBackend) loginList() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.logins...)
}

func (f *fakeLineBackend) lastClient() backend.Client {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.clients) == 0 {
		return backend.Client{}
	}
	return f.clients[len(f.clients)-1]
}

// fakePOP3 satisfies POP3Backend.
type fakePOP3 struct{ *fakeLineBackend }

func (f fakePOP3) Login(_ context.Context, c backend.Client, user, pass string) (*backend.Session, error) {
	return f.login(c, user, pass)
}

func (f fakePOP3) Capabilities(context.Context) ([]string, error) { return f.getCaps() }

// fakeSMTP satisfies SMTPBackend.
type fakeSMTP struct{ *fakeLineBackend }

func (f fakeSMTP) Login(_ context.Context, c backend.Client, user, pass string) (*backend.Session, error) {
	return f.login(c, user, pass)
}

func (f fakeSMTP) Extensions(context.Context) ([]string, error) { return f.getCaps() }

func loopbackPrefixes() []netip.Prefix { return []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")} }

// multiline reads a POP3 multi-line body up to ".".
func (c *client) multiline() []string {
	c.t.Helper()
	var ls []string
	for {
		l := c.line()
		if l == "." {
			return ls
		}
		ls = append(ls, l)
	}
}

const pop3Proto = policy.POP3
