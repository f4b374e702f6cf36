package backend

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/internal/authlimit"
)

// imapFake is a scripted IMAP server with failure knobs. Zero fields
// mean a well-behaved Dovecot-like server.
type imapFake struct {
	greeting    string      // greeting line; default OK with capabilities
	caps        string      // CAPABILITY list; default below
	idUntagged  string      // raw untagged ID response (may hold a literal)
	idReply     string      // tagged ID reply after the tag; default OK
	untagged    []string    // lines sent before the tagged login reply
	loginReply  string      // tagged login reply after the tag; default OK
	startTLS    *tls.Config // offer STARTTLS with this server config
	injectPlain bool        // send a plaintext line right after STARTTLS's OK
	// holdID answers ID only once the next command has arrived: a client
	// that waits for the ID reply before its login never gets one.
	holdID bool
	// silentLogin sends untagged but never a tagged reply to the login,
	// as Dovecot does after "* BAD" for a line it could not parse.
	silentLogin bool
	closeLogin  bool // close the connection after the login's untagged lines

	tags   recorder // command tags in order
	cmds   recorder // command names in order
	logins recorder // "user\x00pass" as decoded by the server
	ids    recorder // ID fields as "key=value"
}

const fakeCaps = "IMAP4rev1 SASL-IR AUTH=PLAIN ID LITERAL+"

func (f *imapFake) capList() string {
	if f.caps != "" {
		return f.caps
	}
	return fakeCaps
}

func (f *imapFake) handle(fc *fakeConn) {
	if f.greeting != "" {
		fc.send(f.greeting)
	} else {
		fc.send("* OK [CAPABILITY " + f.capList() + "] fake ready")
	}
	var held []string // ID reply lines held back (holdID)
	for {
		args, err := imapArgs(fc.br, func() { fc.send("+ go ahead") })
		if err != nil {
			return
		}
		if len(args) < 2 {
			fc.send("* BAD no command")
			return
		}
		tag, cmd := args[0], strings.ToUpper(args[1])
		f.tags.add(tag)
		f.cmds.add(cmd)
		if held != nil {
			fc.send(held...)
			held = nil
		}
		switch cmd {
		case "CAPABILITY":
			fc.send("* CAPABILITY "+f.capList(), tag+" OK done")
		case "ID":
			for i := 2; i+1 < len(args); i += 2 {
				f.ids.add(args[i] + "=" + args[i+1])
			}
			reply := []string{`* ID ("name" "fake")`, tag + " OK ID done"}
			if f.idUntagged != "" {
				reply[0] = f.idUntagged
			}
			if f.idReply != "" {
				reply[1] = tag + " " + f.idReply
			}
			if f.holdID {
				held = reply
				continue
			}
			fc.send(reply...)
		case "STARTTLS":
			fc.send(tag + " OK begin TLS")
			if f.injectPlain {
				fc.send("* OK injected")
			}
			if !fc.upgrade(f.startTLS) {
				return
			}
		case "LOGIN":
			if len(args) != 4 {
				fc.t.Errorf("LOGIN with %d arguments: %q", len(args)-2, args[2:])
				fc.send(tag + " BAD arguments")
				return
			}
			f.logins.add(args[2] + "\x00" + args[3])
			f.loginDone(fc, tag)
			if f.closeLogin {
				return
			}
		case "AUTHENTICATE":
			var ir string
			switch len(args) {
			case 4:
				ir = args[3]
			case 3:
				fc.send("+ ")
				l, ok := fc.line()
				if !ok {
					return
				}
				ir = l
			default:
				fc.send(tag + " BAD arguments")
				return
			}
			msg, err := base64.StdEncoding.DecodeString(ir)
			parts := strings.Split(string(msg), "\x00")
			if err != nil || len(parts) != 3 || !strings.EqualFold(args[2], "PLAIN") {
				fc.t.Errorf("bad AUTHENTICATE %q", args[2:])
				fc.send(tag + " BAD bad")
				return
			}
			f.logins.add(parts[1] + "\x00" + parts[2])
			f.loginDone(fc, tag)
			if f.closeLogin {
				return
			}
		case "SELECT":
			fc.send("* 0 EXISTS", tag+" OK [READ-WRITE] selected")
		case "LOGOUT":
			fc.send("* BYE bye", tag+" OK done")
			return
		default:
			fc.send(tag + " BAD unknown command")
		}
	}
}

func (f *imapFake) loginDone(fc *fakeConn, tag string) {
	fc.send(f.untagged...)
	if f.silentLogin {
		return
	}
	if f.loginReply != "" {
		fc.send(tag + " " + f.loginReply)
	} else {
		fc.send(tag + " OK [CAPABILITY IMAP4rev1 IDLE] Logged in")
	}
}

func startIMAP(t *testing.T, f *imapFake) (*fakeServer, *IMAP) {
	srv := newFakeServer(t, f.handle)
	return srv, &IMAP{Opts: testOpts(t, srv.addr())}
}

func TestIMAPLoginSASLIR(t *testing.T) {
	f := &imapFake{untagged: []string{"* CAPABILITY IMAP4rev1 IDLE"}}
	_, b := startIMAP(t, f)
	sess, err := b.Login(withTimeout(t), testClient, "a001", "alice@example.test", "secret pass")
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Conn.Close()
	want := "* CAPABILITY IMAP4rev1 IDLE\r\na001 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n"
	if string(sess.Reply) != want {
		t.Errorf("Reply = %q, want %q", sess.Reply, want)
	}
	if got := f.logins.all(); !slices.Equal(got, []string{"alice@example.test\x00secret pass"}) {
		t.Errorf("server saw logins %q", got)
	}
	if got := f.cmds.all(); !slices.Equal(got, []string{"AUTHENTICATE"}) {
		t.Errorf("commands = %q, want only AUTHENTICATE (caps came with the greeting)", got)
	}
	// The session is logged in and ready to splice.
	if _, err := io.WriteString(sess.Conn, "a002 SELECT INBOX\r\n"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 128)
	_ = sess.Conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _ := io.ReadAtLeast(sess.Conn, buf, len("* 0 EXISTS\r\n"))
	if !strings.HasPrefix(string(buf[:n]), "* 0 EXISTS") {
		t.Errorf("after login, SELECT answered %q", buf[:n])
	}
}

// TestIMAPLoginEncoding checks that every awkward user name and password
// reaches the server as exactly one LOGIN command with the right two
// arguments, with synchronizing literals, LITERAL+ and LITERAL-.
func TestIMAPLoginEncoding(t *testing.T) {
	creds := [][2]string{
		{"alice", "plain"},
		{`quo"te`, `back\slash`},
		{`a"b\c`, `"\"`},
		{"literal{5}", "{5}"},
		{"üser@exämple.test", "pässwörd"},
		{"sp ace", "  two  spaces "},
		{"tab\tuser", "ctl\x01\x7f"},
		{"*", "()%"},
		{"x", ""},
	}
	for _, caps := range []string{"IMAP4rev1", "IMAP4rev1 LITERAL+", "IMAP4rev1 LITERAL-"} {
		for _, c := range creds {
			t.Run(fmt.Sprintf("%s/%q", caps, c[0]), func(t *testing.T) {
				f := &imapFake{caps: caps}
				_, b := startIMAP(t, f)
				sess, err := b.Login(withTimeout(t), testClient, "A1", c[0], c[1])
				if err != nil {
					t.Fatal(err)
				}
				sess.Conn.Close()
				if got := f.logins.all(); !slices.Equal(got, []string{c[0] + "\x00" + c[1]}) {
					t.Errorf("server decoded %q, want %q", got, c[0]+"\x00"+c[1])
				}
				if got := f.cmds.all(); !slices.Equal(got, []string{"LOGIN"}) {
					t.Errorf("commands = %q, want exactly one LOGIN", got)
				}
			})
		}
	}
}

func TestIMAPRefusesInjection(t *testing.T) {
	for _, c := range [][2]string{
		{"alice\r\na2 DELETE INBOX", "x"},
		{"alice", "pw\r\na2 DELETE INBOX"},
		{"alice\n", "x"},
		{"al\x00ice", "x"},
		{"alice", "p\x00w"},
		{"", "x"},
		{strings.Repeat("u", authlimit.MaxUsername+1), "x"},
		{"alice", strings.Repeat("p", authlimit.MaxPassword+1)},
	} {
		f := &imapFake{}
		srv, b := startIMAP(t, f)
		_, err := b.Login(withTimeout(t), testClient, "a1", c[0], c[1])
		wantErr(t, err, ErrAuthFailed)
		if n := srv.accepted.Load(); n != 0 {
			t.Errorf("Login(%q, %q) connected to the backend %d times", c[0], c[1], n)
		}
	}
}

func TestIMAPValidTag(t *testing.T) {
	for _, tag := range []string{"a1", "A.001", "x]y", "tag-9_8!", "mg12"} {
		if !validTag(tag) {
			t.Errorf("validTag(%q) = false, want true", tag)
		}
	}
	for _, tag := range []string{"", "a+b", "a b", "a{1}", `a"`, "a\\", "*", "a(", "a%", "tä", strings.Repeat("t", maxTagLen+1)} {
		if validTag(tag) {
			t.Errorf("validTag(%q) = true, want false", tag)
		}
	}
}

func TestIMAPForwardClientID(t *testing.T) {
	f := &imapFake{idUntagged: "* ID (\"name\" {7}\r\nDovecot \"version\" \"2.3\")"}
	_, b := startIMAP(t, f)
	b.Opts.ForwardClient = true
	sess, err := b.Login(withTimeout(t), testClient, "a1", "alice", "pw")
	if err != nil {
		t.Fatal(err)
	}
	sess.Conn.Close()
	want := []string{
		"x-originating-ip=81.2.69.142", "x-originating-port=40001",
		"x-connected-ip=192.0.2.10", "x-connected-port=993",
		"x-session-id=s-1234",
	}
	if got := f.ids.all(); !slices.Equal(got, want) {
		t.Errorf("ID fields = %q, want %q", got, want)
	}
	if got := f.cmds.all(); !slices.Equal(got, []string{"ID", "AUTHENTICATE"}) {
		t.Errorf("commands = %q, want ID before AUTHENTICATE", got)
	}
}

// The login goes out behind ID without waiting for its reply (one round
// trip less per login): a server that answers ID only when the next
// command arrives still logs the user in. A login that needs a
// continuation (no SASL-IR) reads the ID reply first, so the "+" is not
// confused with it.
func TestIMAPIDPipelinedWithLogin(t *testing.T) {
	f := &imapFake{holdID: true}
	_, b := startIMAP(t, f)
	b.Opts.ForwardClient = true
	sess, err := b.Login(withTimeout(t), testClient, "a1", "alice", "pw")
	if err != nil {
		t.Fatalf("login behind a held ID reply: %v", err)
	}
	sess.Conn.Close()
	if got := f.cmds.all(); !slices.Equal(got, []string{"ID", "AUTHENTICATE"}) {
		t.Errorf("commands = %q", got)
	}

	f = &imapFake{caps: "IMAP4rev1 AUTH=PLAIN LOGINDISABLED ID"}
	_, b = startIMAP(t, f)
	b.Opts.ForwardClient = true
	sess, err = b.Login(withTimeout(t), testClient, "a1", "alice", "pw")
	if err != nil {
		t.Fatalf("AUTHENTICATE with a continuation after ID: %v", err)
	}
	sess.Conn.Close()
	if got := f.logins.all(); !slices.Equal(got, []string{"alice\x00pw"}) {
		t.Errorf("logins = %q", got)
	}
}

func TestIMAPIDRefusedStillLogsIn(t *testing.T) {
	f := &imapFake{idReply: "BAD no ID here"}
	_, b := startIMAP(t, f)
	b.Opts.ForwardClient = true
	sess, err := b.Login(withTimeout(t), testClient, "a1", "alice", "pw")
	if err != nil {
		t.Fatal(err)
	}
	sess.Conn.Close()
	if got := f.cmds.all(); !slices.Equal(got, []string{"ID", "AUTHENTICATE"}) {
		t.Errorf("commands = %q", got)
	}
}

func TestIMAPNoIDCapabilitySkipsID(t *testing.T) {
	f := &imapFake{caps: "IMAP4rev1 SASL-IR AUTH=PLAIN"}
	_, b := startIMAP(t, f)
	b.Opts.ForwardClient = true
	sess, err := b.Login(withTimeout(t), testClient, "a1", "alice", "pw")
	if err != nil {
		t.Fatal(err)
	}
	sess.Conn.Close()
	if got := f.cmds.all(); !slices.Equal(got, []string{"AUTHENTICATE"}) {
		t.Errorf("commands = %q, want no ID to a server without ID", got)
	}
}

func TestIMAPCapabilityWhenNotInGreeting(t *testing.T) {
	f := &imapFake{greeting: "* OK fake ready", caps: "IMAP4rev1 AUTH=PLAIN SASL-IR"}
	_, b := startIMAP(t, f)
	sess, err := b.Login(withTimeout(t), testClient, "a1", "alice", "pw")
	if err != nil {
		t.Fatal(err)
	}
	sess.Conn.Close()
	if got := f.cmds.all(); !slices.Equal(got, []string{"CAPABILITY", "AUTHENTICATE"}) {
		t.Errorf("commands = %q", got)
	}
}

func TestIMAPLoginDisabledUsesAuthenticate(t *testing.T) {
	f := &imapFake{caps: "IMAP4rev1 AUTH=PLAIN LOGINDISABLED"}
	_, b := startIMAP(t, f)
	sess, err := b.Login(withTimeout(t), testClient, "a1", "alice", "pw")
	if err != nil {
		t.Fatal(err)
	}
	sess.Conn.Close()
	if got := f.logins.all(); !slices.Equal(got, []string{"alice\x00pw"}) {
		t.Errorf("logins = %q", got)
	}
	f = &imapFake{caps: "IMAP4rev1 LOGINDISABLED"}
	_, b = startIMAP(t, f)
	_, err = b.Login(withTimeout(t), testClient, "a1", "alice", "pw")
	wantErr(t, err, ErrUnavailable)
}

func TestIMAPStartTLS(t *testing.T) {
	srvTLS, cliTLS := testTLS(t)
	f := &imapFake{caps: "IMAP4rev1 STARTTLS LOGINDISABLED", startTLS: srvTLS}
	srv := newFakeServer(t, func(fc *fakeConn) {
		// Capabilities change after TLS: LOGIN allowed then.
		f.handle(fc)
	})
	b := &IMAP{Opts: testOpts(t, srv.addr())}
	b.Opts.TLS = TLSStartTLS
	b.Opts.TLSConfig = cliTLS
	// The fake keeps LOGINDISABLED after TLS; Login must ask CAPABILITY
	// again after STARTTLS (RFC 9051 6.2.1) and so sees it and fails.
	_, err := b.Login(withTimeout(t), testClient, "a1", "alice", "pw")
	wantErr(t, err, ErrUnavailable)
	if got := f.cmds.all(); !slices.Equal(got, []string{"STARTTLS", "CAPABILITY"}) {
		t.Errorf("commands = %q", got)
	}

	f2 := &imapFake{caps: "IMAP4rev1 STARTTLS", startTLS: srvTLS}
	srv2 := newFakeServer(t, f2.handle)
	b.Opts.Address = srv2.addr()
	sess, err := b.Login(withTimeout(t), testClient, "a1", "alice", "pw")
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Conn.Close()
	if _, ok := sess.Conn.(*tls.Conn); !ok {
		t.Errorf("session conn is %T, want *tls.Conn", sess.Conn)
	}
	if got := f2.cmds.all(); !slices.Equal(got, []string{"STARTTLS", "CAPABILITY", "LOGIN"}) {
		t.Errorf("commands = %q", got)
	}
}

func TestIMAPStartTLSInjection(t *testing.T) {
	srvTLS, cliTLS := testTLS(t)
	f := &imapFake{caps: "IMAP4rev1 STARTTLS", startTLS: srvTLS, injectPlain: true}
	_, b := startIMAP(t, f)
	b.Opts.TLS = TLSStartTLS
	b.Opts.TLSConfig = cliTLS
	_, err := b.Login(withTimeout(t), testClient, "a1", "alice", "pw")
	wantErr(t, err, ErrUnavailable)
}

func TestIMAPImplicitTLS(t *testing.T) {
	srvTLS, cliTLS := testTLS(t)
	f := &imapFake{}
	srv := newFakeServer(t, func(fc *fakeConn) {
		if fc.upgrade(srvTLS) {
			f.handle(fc)
		}
	})
	b := &IMAP{Opts: testOpts(t, srv.addr())}
	b.Opts.TLS = TLSImplicit
	b.Opts.TLSConfig = cliTLS
	sess, err := b.Login(withTimeout(t), testClient, "a1", "alice", "pw")
	if err != nil {
		t.Fatal(err)
	}
	sess.Conn.Close()

	// A certificate the client does not trust is unavailable, not a panic
	// or a plaintext fallback.
	b.Opts.TLSConfig = &tls.Config{}
	_, err = b.Login(withTimeout(t), testClient, "a1", "alice", "pw")
	wantErr(t, err, ErrUnavailable)
}

func TestIMAPFailures(t *testing.T) {
	tests := []struct {
		name   string
		script func(fc *fakeConn)
		want   error
	}{
		{"bye greeting", func(fc *fakeConn) { fc.send("* BYE too many connections") }, ErrUnavailable},
		{"preauth greeting", func(fc *fakeConn) { fc.send("* PREAUTH hello root") }, ErrUnavailable},
		{"garbage greeting", func(fc *fakeConn) { fc.send("HTTP/1.1 400 Bad Request") }, ErrUnavailable},
		{"close at once", func(fc *fakeConn) {}, ErrUnavailable},
		{"no CRLF then close", func(fc *fakeConn) { io.WriteString(fc.Conn, "* OK [CAPAB") }, ErrUnavailable},
		{"overlong line", func(fc *fakeConn) { io.WriteString(fc.Conn, "* OK "+strings.Repeat("x", maxLineLen+10)+"\r\n") }, ErrUnavailable},
		{"huge literal", func(fc *fakeConn) { fc.send("* OK {999999999}") }, ErrUnavailable},
		{"wrong password", loginScript("NO [AUTHENTICATIONFAILED] Authentication failed."), ErrAuthFailed},
		{"plain NO", loginScript("NO Login failed"), ErrAuthFailed},
		{"temporary", loginScript("NO [UNAVAILABLE] Temporary authentication failure."), ErrUnavailable},
		{"server bug", loginScript("NO [SERVERBUG] oops"), ErrUnavailable},
		{"needs TLS", loginScript("NO [PRIVACYREQUIRED] use TLS"), ErrUnavailable},
		{"expired", loginScript("NO [EXPIRED] password expired"), ErrAuthFailed},
		{"BAD", loginScript("BAD syntax"), ErrUnavailable},
		{"bye during login", func(fc *fakeConn) {
			fc.send("* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] ready")
			fc.line()
			fc.send("* BYE shutting down")
		}, ErrUnavailable},
		{"close during login", func(fc *fakeConn) {
			fc.send("* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] ready")
			fc.line()
		}, ErrUnavailable},
		{"other tag", func(fc *fakeConn) {
			fc.send("* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] ready")
			fc.line()
			fc.send("zz9 OK not yours")
		}, ErrUnavailable},
		{"continuation to SASL-IR", func(fc *fakeConn) {
			fc.send("* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] ready")
			fc.line()
			fc.send("+ more please")
		}, ErrUnavailable},
		{"endless untagged", func(fc *fakeConn) {
			fc.send("* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] ready")
			fc.line()
			for range maxReplyLines + 1 {
				fc.send("* OK chatter")
			}
		}, ErrUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newFakeServer(t, tt.script)
			b := &IMAP{Opts: testOpts(t, srv.addr())}
			sess, err := b.Login(withTimeout(t), testClient, "a1", "alice", "pw")
			if sess != nil {
				sess.Conn.Close()
			}
			wantErr(t, err, tt.want)
			if strings.Contains(fmt.Sprint(err), "pw") && tt.want == ErrAuthFailed {
				t.Errorf("error %q may contain the password", err)
			}
		})
	}
}

// loginScript greets with SASL-IR and answers the login with reply.
func loginScript(reply string) func(fc *fakeConn) {
	return func(fc *fakeConn) {
		fc.send("* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] ready")
		l, ok := fc.line()
		if !ok {
			return
		}
		fc.send(strings.Fields(l)[0] + " " + reply)
	}
}

func TestIMAPUnreachable(t *testing.T) {
	b := &IMAP{Opts: testOpts(t, closedAddr(t))}
	_, err := b.Login(withTimeout(t), testClient, "a1", "alice", "pw")
	wantErr(t, err, ErrUnavailable)
}

// TestIMAPHangingBackend: a backend that accepts and never speaks gives
// ErrUnavailable once Timeout passes (the kind, not the duration, is what
// is asserted).
func TestIMAPHangingBackend(t *testing.T) {
	release := make(chan struct{})
	srv := newFakeServer(t, func(fc *fakeConn) { <-release })
	defer close(release)
	b := &IMAP{Opts: testOpts(t, srv.addr())}
	b.Opts.Timeout = 50 * time.Millisecond
	_, err := b.Login(withTimeout(t), testClient, "a1", "alice", "pw")
	wantErr(t, err, ErrUnavailable)
	if !strings.Contains(err.Error(), "timeout") {
		t.Errorf("error %q does not say timeout", err)
	}
}

func TestIMAPContextCancel(t *testing.T) {
	release := make(chan struct{})
	srv := newFakeServer(t, func(fc *fakeConn) { <-release })
	defer close(release)
	b := &IMAP{Opts: testOpts(t, srv.addr())}
	b.Opts.Timeout = time.Minute
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for srv.accepted.Load() == 0 {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	_, err := b.Login(ctx, testClient, "a1", "alice", "pw")
	wantErr(t, err, ErrUnavailable)
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "canceled") {
		t.Errorf("error %q does not say canceled", err)
	}
}

// TestIMAPBufferedAfterReply: bytes the backend sent right after the
// login reply are handed over, not lost.
func TestIMAPBufferedAfterReply(t *testing.T) {
	srv := newFakeServer(t, func(fc *fakeConn) {
		fc.send("* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] ready")
		l, _ := fc.line()
		io.WriteString(fc.Conn, strings.Fields(l)[0]+" OK done\r\n* 3 EXISTS\r\n")
		fc.line()
	})
	b := &IMAP{Opts: testOpts(t, srv.addr())}
	sess, err := b.Login(withTimeout(t), testClient, "a1", "alice", "pw")
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Conn.Close()
	// The extra line may or may not have arrived with the reply; what was
	// read must be in Buffered, the rest still on the socket.
	got := string(sess.Buffered)
	if got != "" && got != "* 3 EXISTS\r\n" {
		t.Errorf("Buffered = %q", got)
	}
	if got == "" {
		buf := make([]byte, 64)
		_ = sess.Conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _ := io.ReadAtLeast(sess.Conn, buf, 12)
		if string(buf[:n]) != "* 3 EXISTS\r\n" {
			t.Errorf("socket then held %q", buf[:n])
		}
	}
	if string(sess.Reply) != "a1 OK done\r\n" {
		t.Errorf("Reply = %q", sess.Reply)
	}
}

var _ net.Conn = (*fakeConn)(nil)
