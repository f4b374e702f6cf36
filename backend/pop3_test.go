package backend

import (
	"crypto/tls"
	"encoding/base64"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// pop3Fake is a scripted Dovecot-like POP3 server with failure knobs.
type pop3Fake struct {
	greeting     string                         // default "+OK [XCLIENT] Dovecot ready."
	capa         []string                       // CAPA lines; default Dovecot's
	noCapa       bool                           // answer CAPA with -ERR
	authReply    string                         // reply to a complete login; default "+OK Logged in."
	xclientReply string                         // default "+OK Updated"
	startTLS     *tls.Config                    // offer STLS
	noAuth       bool                           // refuse AUTH as unsupported, as Dovecot does for a mechanism it does not offer
	seen         func(fc *fakeConn, cmd string) // called with each command as read, before the reply

	cmds    recorder // command names in order
	logins  recorder // "user\x00pass" as decoded
	xclient recorder // XCLIENT argument strings
}

var dovecotCapa = []string{"CAPA", "TOP", "UIDL", "RESP-CODES", "PIPELINING", "AUTH-RESP-CODE", "STLS", "USER", "SASL PLAIN LOGIN"}

func (f *pop3Fake) handle(fc *fakeConn) {
	if f.greeting != "" {
		fc.send(f.greeting)
	} else {
		fc.send("+OK [XCLIENT] Dovecot ready.")
	}
	var user string
	for {
		l, ok := fc.line()
		if !ok {
			return
		}
		cmd, arg, _ := strings.Cut(l, " ")
		cmd = strings.ToUpper(cmd)
		f.cmds.add(cmd)
		if f.seen != nil {
			f.seen(fc, cmd)
		}
		switch cmd {
		case "CAPA":
			if f.noCapa {
				fc.send("-ERR unknown command")
				continue
			}
			capa := f.capa
			if capa == nil {
				capa = dovecotCapa
			}
			fc.send("+OK")
			fc.send(capa...)
			fc.send(".")
		case "STLS":
			fc.send("+OK Begin TLS negotiation now.")
			if !fc.upgrade(f.startTLS) {
				return
			}
		case "XCLIENT":
			f.xclient.add(arg)
			if f.xclientReply != "" {
				fc.send(f.xclientReply)
			} else {
				fc.send("+OK Updated")
			}
		case "AUTH":
			mech, ir, _ := strings.Cut(arg, " ")
			if mech != "PLAIN" || f.noAuth {
				fc.send("-ERR unsupported")
				continue
			}
			if ir == "" {
				fc.send("+ ")
				if ir, ok = fc.line(); !ok {
					return
				}
			}
			msg, err := base64.StdEncoding.DecodeString(ir)
			parts := strings.Split(string(msg), "\x00")
			if err != nil || len(parts) != 3 {
				fc.t.Errorf("bad AUTH PLAIN %q", ir)
				fc.send("-ERR bad")
				continue
			}
			f.logins.add(parts[1] + "\x00" + parts[2])
			f.done(fc)
		case "USER":
			user = arg
			fc.send("+OK")
		case "PASS":
			f.logins.add(user + "\x00" + arg)
			f.done(fc)
		case "STAT":
			fc.send("+OK 0 0")
		case "QUIT":
			fc.send("+OK Logging out.")
			return
		default:
			fc.send("-ERR Unknown command.")
		}
	}
}

func (f *pop3Fake) done(fc *fakeConn) {
	if f.authReply != "" {
		fc.send(f.authReply)
	} else {
		fc.send("+OK Logged in.")
	}
}

func startPOP3(t *testing.T, f *pop3Fake) (*fakeServer, *POP3) {
	srv := newFakeServer(t, f.handle)
	return srv, &POP3{Opts: testOpts(t, srv.addr())}
}

func TestPOP3LoginAuthPlainWithXCLIENT(t *testing.T) {
	f := &pop3Fake{}
	_, b := startPOP3(t, f)
	b.Opts.ForwardClient = true
	sess, err := b.Login(withTimeout(t), testClient, "alice@example.test", "pass word")
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Conn.Close()
	if string(sess.Reply) != "+OK Logged in.\r\n" {
		t.Errorf("Reply = %q", sess.Reply)
	}
	if got := f.cmds.all(); !slices.Equal(got, []string{"XCLIENT", "CAPA", "AUTH"}) {
		t.Errorf("commands = %q", got)
	}
	if got := f.xclient.all(); !slices.Equal(got, []string{"ADDR=81.2.69.142 PORT=40001 SESSION=s-1234"}) {
		t.Errorf("XCLIENT args = %q", got)
	}
	if got := f.logins.all(); !slices.Equal(got, []string{"alice@example.test\x00pass word"}) {
		t.Errorf("logins = %q", got)
	}
	// Ready to splice: a transaction-state command works.
	io.WriteString(sess.Conn, "STAT\r\n")
	_ = sess.Conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	n, _ := io.ReadAtLeast(sess.Conn, buf, 9)
	if string(buf[:n]) != "+OK 0 0\r\n" {
		t.Errorf("STAT answered %q", buf[:n])
	}
}

func TestPOP3NoXCLIENTOffered(t *testing.T) {
	f := &pop3Fake{greeting: "+OK Dovecot ready."}
	_, b := startPOP3(t, f)
	b.Opts.ForwardClient = true
	for range 2 {
		sess, err := b.Login(withTimeout(t), testClient, "alice", "pw")
		if err != nil {
			t.Fatal(err)
		}
		sess.Conn.Close()
	}
	if got := f.xclient.all(); len(got) != 0 {
		t.Errorf("XCLIENT sent to a server that did not offer it: %q", got)
	}
	if !b.warnedXC.Load() {
		t.Error("missing XCLIENT was not logged")
	}
}

func TestPOP3XCLIENTRefusedStillLogsIn(t *testing.T) {
	f := &pop3Fake{xclientReply: "-ERR You're not allowed to use XCLIENT"}
	_, b := startPOP3(t, f)
	b.Opts.ForwardClient = true
	sess, err := b.Login(withTimeout(t), testClient, "alice", "pw")
	if err != nil {
		t.Fatal(err)
	}
	sess.Conn.Close()
}

func TestPOP3UserPass(t *testing.T) {
	f := &pop3Fake{capa: []string{"TOP", "UIDL", "USER"}}
	_, b := startPOP3(t, f)
	sess, err := b.Login(withTimeout(t), testClient, "alice@example.test", "pass with spaces ")
	if err != nil {
		t.Fatal(err)
	}
	sess.Conn.Close()
	if got := f.cmds.all(); !slices.Equal(got, []string{"CAPA", "USER", "PASS"}) {
		t.Errorf("commands = %q", got)
	}
	if got := f.logins.all(); !slices.Equal(got, []string{"alice@example.test\x00pass with spaces "}) {
		t.Errorf("logins = %q", got)
	}

	// A user name with a space cannot go in USER: refused, not split.
	f2 := &pop3Fake{noCapa: true}
	_, b2 := startPOP3(t, f2)
	_, err = b2.Login(withTimeout(t), testClient, "alice smith", "pw")
	wantErr(t, err, ErrAuthFailed)
	if got := f2.cmds.all(); slices.Contains(got, "USER") {
		t.Errorf("USER sent for a name with a space: %q", got)
	}
}

func TestPOP3LongCredentialsUseContinuation(t *testing.T) {
	f := &pop3Fake{}
	_, b := startPOP3(t, f)
	long := strings.Repeat("p", 300)
	sess, err := b.Login(withTimeout(t), testClient, "alice", long)
	if err != nil {
		t.Fatal(err)
	}
	sess.Conn.Close()
	if got := f.logins.all(); !slices.Equal(got, []string{"alice\x00" + long}) {
		t.Errorf("logins = %q", got)
	}
}

func TestPOP3RefusesInjection(t *testing.T) {
	for _, c := range [][2]string{{"alice\r\nDELE 1", "pw"}, {"alice", "pw\nDELE 1"}, {"a\x00b", "pw"}} {
		f := &pop3Fake{}
		srv, b := startPOP3(t, f)
		_, err := b.Login(withTimeout(t), testClient, c[0], c[1])
		wantErr(t, err, ErrAuthFailed)
		if srv.accepted.Load() != 0 {
			t.Errorf("Login(%q) connected", c[0])
		}
	}
}

func TestPOP3STLS(t *testing.T) {
	srvTLS, cliTLS := testTLS(t)
	f := &pop3Fake{startTLS: srvTLS}
	_, b := startPOP3(t, f)
	b.Opts.TLS = TLSStartTLS
	b.Opts.TLSConfig = cliTLS
	b.Opts.ForwardClient = true
	sess, err := b.Login(withTimeout(t), testClient, "alice", "pw")
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Conn.Close()
	if _, ok := sess.Conn.(*tls.Conn); !ok {
		t.Errorf("session conn is %T", sess.Conn)
	}
	if got := f.cmds.all(); !slices.Equal(got, []string{"STLS", "XCLIENT", "CAPA", "AUTH"}) {
		t.Errorf("commands = %q, want STLS first", got)
	}
}

func TestPOP3Failures(t *testing.T) {
	tests := []struct {
		name string
		f    *pop3Fake
		want error
	}{
		{"wrong password", &pop3Fake{authReply: "-ERR [AUTH] Authentication failed."}, ErrAuthFailed},
		{"plain -ERR", &pop3Fake{authReply: "-ERR nope"}, ErrAuthFailed},
		{"temporary", &pop3Fake{authReply: "-ERR [SYS/TEMP] Temporary authentication failure."}, ErrUnavailable},
		{"in use", &pop3Fake{authReply: "-ERR [IN-USE] locked"}, ErrUnavailable},
		{"server problem", &pop3Fake{authReply: "-ERR [SYS/PERM] mailbox corrupted"}, ErrUnavailable},
		{"AUTH code", &pop3Fake{authReply: "-ERR [AUTH] Authentication failed."}, ErrAuthFailed},
		{"garbage reply", &pop3Fake{authReply: "HTTP/1.0 200 OK"}, ErrUnavailable},
		{"-ERR greeting", &pop3Fake{greeting: "-ERR go away"}, ErrUnavailable},
		{"garbage greeting", &pop3Fake{greeting: "+OKAY"}, ErrUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, b := startPOP3(t, tt.f)
			sess, err := b.Login(withTimeout(t), testClient, "alice", "pw")
			if sess != nil {
				sess.Conn.Close()
			}
			wantErr(t, err, tt.want)
		})
	}
	t.Run("hang", func(t *testing.T) {
		release := make(chan struct{})
		srv := newFakeServer(t, func(fc *fakeConn) { <-release })
		defer close(release)
		b := &POP3{Opts: testOpts(t, srv.addr())}
		b.Opts.Timeout = 50 * time.Millisecond
		_, err := b.Login(withTimeout(t), testClient, "alice", "pw")
		wantErr(t, err, ErrUnavailable)
	})
	t.Run("refused", func(t *testing.T) {
		b := &POP3{Opts: testOpts(t, closedAddr(t))}
		_, err := b.Login(withTimeout(t), testClient, "alice", "pw")
		wantErr(t, err, ErrUnavailable)
	})
	t.Run("endless CAPA", func(t *testing.T) {
		lines := make([]string, maxReplyLines+1)
		for i := range lines {
			lines[i] = "X-FOO"
		}
		_, b := startPOP3(t, &pop3Fake{capa: lines})
		_, err := b.Login(withTimeout(t), testClient, "alice", "pw")
		wantErr(t, err, ErrUnavailable)
	})
}

func TestPOP3Capabilities(t *testing.T) {
	f := &pop3Fake{}
	srv, b := startPOP3(t, f)
	caps, err := b.Capabilities(withTimeout(t))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(caps, dovecotCapa) {
		t.Errorf("Capabilities = %q, want %q", caps, dovecotCapa)
	}
	if got := f.cmds.all(); !slices.Equal(got, []string{"CAPA", "QUIT"}) {
		t.Errorf("commands = %q", got)
	}
	// Cached: no second connection within the refresh interval.
	if _, err := b.Capabilities(withTimeout(t)); err != nil || srv.accepted.Load() != 1 {
		t.Errorf("second call: err %v, connections %d, want cached", err, srv.accepted.Load())
	}
	// Stale with many callers at once: one refresh connection.
	b.caps.at = time.Now().Add(-2 * capaRefresh)
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if c, err := b.Capabilities(withTimeout(t)); err != nil || len(c) == 0 {
				t.Errorf("concurrent Capabilities = %q, %v", c, err)
			}
		}()
	}
	wg.Wait()
	if n := srv.accepted.Load(); n != 2 {
		t.Errorf("%d connections after a stale burst, want 2 (one refresh)", n)
	}
	// Stale and the backend gone: the last good value, no error.
	b.caps.at = time.Now().Add(-2 * capaRefresh)
	b.Opts.Address = closedAddr(t)
	caps, err = b.Capabilities(withTimeout(t))
	if err != nil || !slices.Equal(caps, dovecotCapa) {
		t.Errorf("stale with backend down = %q, %v; want cached value", caps, err)
	}
	// Never fetched and the backend down: an error.
	b2 := &POP3{Opts: testOpts(t, closedAddr(t))}
	if _, err := b2.Capabilities(withTimeout(t)); err == nil {
		t.Error("Capabilities with backend down and no cache: no error")
	}
	// A server without CAPA is an error, not an empty list.
	_, b3 := startPOP3(t, &pop3Fake{noCapa: true})
	if _, err := b3.Capabilities(withTimeout(t)); err == nil {
		t.Error("Capabilities from a server without CAPA: no error")
	}
}
