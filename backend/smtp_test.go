package backend

import (
	"crypto/tls"
	"encoding/base64"
	"io"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// smtpFake is a scripted Postfix-like SMTP server with failure knobs.
type smtpFake struct {
	greeting     string      // default "220 mx.example.test ESMTP"
	exts         []string    // EHLO keywords; default Postfix-like
	xclientReply string      // default a new 220 greeting
	authReply    string      // default "235 2.7.0 Authentication successful"
	ehloReply    string      // non-empty: answer EHLO/HELO with this instead
	startTLS     *tls.Config // offer STARTTLS
	strictXC     bool        // refuse XCLIENT attributes the XCLIENT keyword does not list, as Postfix does

	lines  recorder // every command line, AUTH lines redacted
	logins recorder // "user\x00pass" from AUTH PLAIN
}

var postfixExts = []string{"PIPELINING", "SIZE 10240000", "ETRN", "AUTH PLAIN LOGIN", "ENHANCEDSTATUSCODES", "8BITMIME", "DSN", "SMTPUTF8", "CHUNKING", "XCLIENT NAME ADDR PROTO HELO REVERSE_NAME PORT LOGIN DESTADDR DESTPORT"}

func (f *smtpFake) handle(fc *fakeConn) {
	if f.greeting != "" {
		fc.send(f.greeting)
	} else {
		fc.send("220 mx.example.test ESMTP")
	}
	exts := f.exts
	if exts == nil {
		exts = postfixExts
	}
	for {
		l, ok := fc.line()
		if !ok {
			return
		}
		cmd, arg, _ := strings.Cut(l, " ")
		cmd = strings.ToUpper(cmd)
		if cmd == "AUTH" {
			f.lines.add("AUTH")
		} else {
			f.lines.add(l)
		}
		switch cmd {
		case "EHLO", "HELO":
			if f.ehloReply != "" {
				fc.send(f.ehloReply)
				continue
			}
			if cmd == "HELO" {
				fc.send("250 mx.example.test")
				continue
			}
			e := slices.Clone(exts)
			if f.startTLS != nil {
				if _, ok := fc.Conn.(*tls.Conn); !ok {
					e = append(e, "STARTTLS")
				}
			}
			fc.send("250-mx.example.test")
			for i, x := range e {
				if i == len(e)-1 {
					fc.send("250 " + x)
				} else {
					fc.send("250-" + x)
				}
			}
		case "STARTTLS":
			fc.send("220 2.0.0 Ready to start TLS")
			if !fc.upgrade(f.startTLS) {
				return
			}
		case "XCLIENT":
			if bad := f.badXclientAttr(exts, arg); bad != "" {
				fc.send("501 5.5.4 Bad XCLIENT attribute name: " + bad)
				continue
			}
			if f.xclientReply != "" {
				fc.send(f.xclientReply)
			} else {
				fc.send("220 mx.example.test ESMTP")
			}
		case "AUTH":
			mech, ir, _ := strings.Cut(arg, " ")
			msg, err := base64.StdEncoding.DecodeString(ir)
			parts := strings.Split(string(msg), "\x00")
			if mech != "PLAIN" || err != nil || len(parts) != 3 {
				fc.t.Errorf("bad AUTH %q", arg)
				fc.send("501 5.5.2 bad")
				continue
			}
			f.logins.add(parts[1] + "\x00" + parts[2])
			if f.authReply != "" {
				fc.send(f.authReply)
			} else {
				fc.send("235 2.7.0 Authentication successful")
			}
		case "MAIL":
			fc.send("250 2.1.0 Ok")
		case "QUIT":
			fc.send("221 2.0.0 Bye")
			return
		default:
			fc.send("502 5.5.2 Error: command not recognized")
		}
	}
}

// startSMTP runs an SMTP fake and, for imap mode, an IMAP fake.
// badXclientAttr returns the first attribute of an XCLIENT argument
// list that exts' XCLIENT keyword does not list, when strictXC is set.
func (f *smtpFake) badXclientAttr(exts []string, arg string) string {
	if !f.strictXC {
		return ""
	}
	var offered []string
	for _, e := range exts {
		if name, attrs, _ := strings.Cut(e, " "); name == "XCLIENT" {
			offered = strings.Fields(attrs)
		}
	}
	for _, a := range strings.Fields(arg) {
		name, _, _ := strings.Cut(a, "=")
		if !slices.Contains(offered, name) {
			return name
		}
	}
	return ""
}

func startSMTP(t *testing.T, f *smtpFake, verify string) (*fakeServer, *SMTP, *imapFake) {
	srv := newFakeServer(t, f.handle)
	b := &SMTP{Opts: testOpts(t, srv.addr()), Verify: verify, XCLIENT: true, Hostname: "mailgate.test", CacheTTL: time.Minute}
	var fi *imapFake
	if verify == VerifyIMAP {
		fi = &imapFake{}
		isrv := newFakeServer(t, fi.handle)
		b.VerifyIMAP = &IMAP{Opts: testOpts(t, isrv.addr())}
		b.VerifyIMAP.Opts.ForwardClient = true
	}
	return srv, b, fi
}

// mailFrom checks that sess is ready for the client's MAIL FROM.
func mailFrom(t *testing.T, sess *Session) {
	t.Helper()
	io.WriteString(sess.Conn, "MAIL FROM:<alice@example.test>\r\n")
	_ = sess.Conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	n, _ := io.ReadAtLeast(sess.Conn, buf, 12)
	if string(buf[:n]) != "250 2.1.0 Ok\r\n" {
		t.Errorf("MAIL FROM answered %q", buf[:n])
	}
}

func TestSMTPLoginIMAPVerifyXCLIENT(t *testing.T) {
	f := &smtpFake{}
	_, b, fi := startSMTP(t, f, VerifyIMAP)
	sess, err := b.Login(withTimeout(t), testClient, "alice+tag@example.test", "pw")
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Conn.Close()
	if sess.Reply != nil {
		t.Errorf("Reply = %q, want nil", sess.Reply)
	}
	want := []string{
		"EHLO mailgate.test",
		"XCLIENT ADDR=81.2.69.142 PORT=40001 NAME=[UNAVAILABLE] DESTADDR=192.0.2.10 DESTPORT=993 HELO=client.example PROTO=ESMTP LOGIN=alice+2Btag@example.test",
		"EHLO client.example",
	}
	if got := f.lines.all(); !slices.Equal(got, want) {
		t.Errorf("SMTP backend saw\n%q\nwant\n%q", got, want)
	}
	if got := fi.logins.all(); !slices.Equal(got, []string{"alice+tag@example.test\x00pw"}) {
		t.Errorf("IMAP verification saw %q", got)
	}
	if got := fi.ids.all(); !slices.Contains(got, "x-originating-ip=81.2.69.142") {
		t.Errorf("IMAP verification ID = %q, want the client address", got)
	}
	if got := fi.cmds.all(); !slices.Equal(got, []string{"ID", "AUTHENTICATE", "LOGOUT"}) && !slices.Equal(got, []string{"ID", "AUTHENTICATE"}) {
		t.Errorf("IMAP verification commands = %q", got)
	}
	mailFrom(t, sess)
}

func TestSMTPXCLIENTEncoding(t *testing.T) {
	f := &smtpFake{exts: []string{"XCLIENT ADDR PORT HELO PROTO LOGIN"}}
	_, b, _ := startSMTP(t, f, VerifyIMAP)
	c := testClient
	c.Addr = netip.MustParseAddrPort("[2001:db8::1]:5555")
	c.Helo = "[192.0.2.1]"
	c.HeloCmd = "HELO"
	sess, err := b.Login(withTimeout(t), c, "we ird=user+x", "pw")
	if err != nil {
		t.Fatal(err)
	}
	sess.Conn.Close()
	got := f.lines.all()
	if len(got) != 3 {
		t.Fatalf("lines = %q", got)
	}
	// Only the attributes the server listed; values xtext; IPv6 tagged.
	wantX := "XCLIENT ADDR=IPV6:2001:db8::1 PORT=5555 HELO=[192.0.2.1] PROTO=SMTP LOGIN=we+20ird+3Duser+2Bx"
	if got[1] != wantX {
		t.Errorf("XCLIENT line %q, want %q", got[1], wantX)
	}
	if got[2] != "HELO [192.0.2.1]" {
		t.Errorf("replayed %q, want the client's HELO", got[2])
	}
}

func TestSMTPIMAPVerifyFailureNeverDialsSMTP(t *testing.T) {
	f := &smtpFake{}
	srv, b, fi := startSMTP(t, f, VerifyIMAP)
	fi.loginReply = "NO [AUTHENTICATIONFAILED] Authentication failed."
	_, err := b.Login(withTimeout(t), testClient, "alice", "wrong")
	wantErr(t, err, ErrAuthFailed)
	if srv.accepted.Load() != 0 {
		t.Error("SMTP backend dialed after a failed verification")
	}
	// Failures are not cached: the next attempt asks the IMAP server again.
	_, err = b.Login(withTimeout(t), testClient, "alice", "wrong")
	wantErr(t, err, ErrAuthFailed)
	if n := len(fi.logins.all()); n != 2 {
		t.Errorf("IMAP saw %d logins, want 2", n)
	}
	fi.loginReply = "NO [UNAVAILABLE] Temporary authentication failure."
	_, err = b.Login(withTimeout(t), testClient, "alice", "pw")
	wantErr(t, err, ErrUnavailable)
}

func TestSMTPVerifyCache(t *testing.T) {
	f := &smtpFake{}
	_, b, fi := startSMTP(t, f, VerifyIMAP)
	for range 3 {
		sess, err := b.Login(withTimeout(t), testClient, "alice", "pw")
		if err != nil {
			t.Fatal(err)
		}
		sess.Conn.Close()
	}
	if n := len(fi.logins.all()); n != 1 {
		t.Errorf("IMAP saw %d logins for 3 SMTP logins, want 1 (cached)", n)
	}
	// Another password is not a hit, and a wrong one is checked.
	fi.loginReply = "NO [AUTHENTICATIONFAILED] no"
	_, err := b.Login(withTimeout(t), testClient, "alice", "pw2")
	wantErr(t, err, ErrAuthFailed)

	// CacheTTL 0: every login verifies.
	_, b0, fi0 := startSMTP(t, &smtpFake{}, VerifyIMAP)
	b0.CacheTTL = 0
	for range 2 {
		sess, err := b0.Login(withTimeout(t), testClient, "alice", "pw")
		if err != nil {
			t.Fatal(err)
		}
		sess.Conn.Close()
	}
	if n := len(fi0.logins.all()); n != 2 {
		t.Errorf("with TTL 0 IMAP saw %d logins, want 2", n)
	}
}

func TestSMTPAuthMode(t *testing.T) {
	f := &smtpFake{}
	_, b, _ := startSMTP(t, f, VerifySMTPAuth)
	sess, err := b.Login(withTimeout(t), testClient, "alice@example.test", "p w")
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Conn.Close()
	want := []string{
		"EHLO mailgate.test",
		"XCLIENT ADDR=81.2.69.142 PORT=40001 NAME=[UNAVAILABLE] DESTADDR=192.0.2.10 DESTPORT=993 HELO=client.example PROTO=ESMTP",
		"EHLO client.example",
		"AUTH",
	}
	if got := f.lines.all(); !slices.Equal(got, want) {
		t.Errorf("SMTP backend saw\n%q\nwant\n%q", got, want)
	}
	if got := f.logins.all(); !slices.Equal(got, []string{"alice@example.test\x00p w"}) {
		t.Errorf("AUTH PLAIN carried %q", got)
	}
	mailFrom(t, sess)
}

func TestSMTPFailures(t *testing.T) {
	tests := []struct {
		name   string
		f      *smtpFake
		verify string
		want   error
	}{
		{"wrong password", &smtpFake{authReply: "535 5.7.8 Error: authentication failed"}, VerifySMTPAuth, ErrAuthFailed},
		{"temporary auth", &smtpFake{authReply: "454 4.7.0 Temporary authentication failure"}, VerifySMTPAuth, ErrUnavailable},
		{"no AUTH offered", &smtpFake{exts: []string{"PIPELINING", "XCLIENT ADDR"}}, VerifySMTPAuth, ErrUnavailable},
		{"XCLIENT not offered", &smtpFake{exts: []string{"PIPELINING"}}, VerifyIMAP, ErrUnavailable},
		{"XCLIENT refused", &smtpFake{xclientReply: "550 5.7.0 Error: insufficient authorization"}, VerifyIMAP, ErrUnavailable},
		{"421 greeting", &smtpFake{greeting: "421 4.3.2 Service shutting down"}, VerifyIMAP, ErrUnavailable},
		{"garbage greeting", &smtpFake{greeting: "* OK IMAP ready"}, VerifyIMAP, ErrUnavailable},
		{"EHLO refused", &smtpFake{ehloReply: "501 5.5.4 Syntax"}, VerifyIMAP, ErrUnavailable},
		{"mixed codes", &smtpFake{ehloReply: "250-mx\r\n550 x"}, VerifyIMAP, ErrUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, b, _ := startSMTP(t, tt.f, tt.verify)
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
		b := &SMTP{Opts: testOpts(t, srv.addr()), Verify: VerifySMTPAuth}
		b.Opts.Timeout = 50 * time.Millisecond
		_, err := b.Login(withTimeout(t), testClient, "alice", "pw")
		wantErr(t, err, ErrUnavailable)
	})
	t.Run("refused", func(t *testing.T) {
		b := &SMTP{Opts: testOpts(t, closedAddr(t)), Verify: VerifySMTPAuth}
		_, err := b.Login(withTimeout(t), testClient, "alice", "pw")
		wantErr(t, err, ErrUnavailable)
	})
}

func TestSMTPRefusesBadInput(t *testing.T) {
	f := &smtpFake{}
	srv, b, fi := startSMTP(t, f, VerifyIMAP)
	for _, c := range [][2]string{{"alice\r\nRCPT TO:<x>", "pw"}, {"alice", "pw\r\nDATA"}, {"al\x00ice", "pw"}} {
		_, err := b.Login(withTimeout(t), testClient, c[0], c[1])
		wantErr(t, err, ErrAuthFailed)
	}
	for _, helo := range []string{"", "evil\r\nRCPT TO:<x>", "two words", strings.Repeat("h", 256), "ünï"} {
		c := testClient
		c.Helo = helo
		_, err := b.Login(withTimeout(t), c, "alice", "pw")
		if err == nil {
			t.Errorf("Login with EHLO name %q succeeded", helo)
		}
	}
	if srv.accepted.Load() != 0 || len(fi.logins.all()) != 0 {
		t.Error("bad input reached a backend")
	}
}

func TestSMTPStartTLS(t *testing.T) {
	srvTLS, cliTLS := testTLS(t)
	f := &smtpFake{startTLS: srvTLS}
	_, b, _ := startSMTP(t, f, VerifySMTPAuth)
	b.Opts.TLS = TLSStartTLS
	b.Opts.TLSConfig = cliTLS
	sess, err := b.Login(withTimeout(t), testClient, "alice", "pw")
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Conn.Close()
	if _, ok := sess.Conn.(*tls.Conn); !ok {
		t.Errorf("session conn is %T", sess.Conn)
	}
	got := f.lines.all()
	if len(got) < 3 || got[0] != "EHLO mailgate.test" || got[1] != "STARTTLS" || got[2] != "EHLO mailgate.test" {
		t.Errorf("lines = %q, want EHLO, STARTTLS, EHLO", got)
	}
	// STARTTLS configured but not offered: refuse rather than go plain.
	_, b2, _ := startSMTP(t, &smtpFake{}, VerifySMTPAuth)
	b2.Opts.TLS = TLSStartTLS
	b2.Opts.TLSConfig = cliTLS
	_, err = b2.Login(withTimeout(t), testClient, "alice", "pw")
	wantErr(t, err, ErrUnavailable)
}

func TestSMTPExtensions(t *testing.T) {
	f := &smtpFake{}
	srv, b, _ := startSMTP(t, f, VerifyIMAP)
	exts, err := b.Extensions(withTimeout(t))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(exts, postfixExts) {
		t.Errorf("Extensions = %q, want %q", exts, postfixExts)
	}
	if got := f.lines.all(); !slices.Equal(got, []string{"EHLO mailgate.test", "QUIT"}) {
		t.Errorf("lines = %q", got)
	}
	if _, err := b.Extensions(withTimeout(t)); err != nil || srv.accepted.Load() != 1 {
		t.Errorf("second call: %v, %d connections; want cached", err, srv.accepted.Load())
	}
	// Stale with many callers at once: one refresh connection.
	b.exts.at = time.Now().Add(-2 * ehloRefresh)
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if e, err := b.Extensions(withTimeout(t)); err != nil || len(e) == 0 {
				t.Errorf("concurrent Extensions = %q, %v", e, err)
			}
		}()
	}
	wg.Wait()
	if n := srv.accepted.Load(); n != 2 {
		t.Errorf("%d connections after a stale burst, want 2", n)
	}
	b.exts.at = time.Now().Add(-2 * ehloRefresh)
	b.Opts.Address = closedAddr(t)
	exts, err = b.Extensions(withTimeout(t))
	if err != nil || !slices.Equal(exts, postfixExts) {
		t.Errorf("stale with backend down = %q, %v; want cached", exts, err)
	}
	b2 := &SMTP{Opts: testOpts(t, closedAddr(t))}
	if _, err := b2.Extensions(withTimeout(t)); err == nil {
		t.Error("Extensions with backend down and no cache: no error")
	}
}

func TestSMTPValidate(t *testing.T) {
	ok := &SMTP{Opts: Options{Address: "127.0.0.1:25"}, VerifyIMAP: &IMAP{}}
	if err := ok.Validate("backends.smtp"); err != nil {
		t.Errorf("Validate = %v", err)
	}
	bad := &SMTP{Opts: Options{Address: "nope"}, Verify: "ldap", CacheTTL: -1}
	err := bad.Validate("backends.smtp")
	for _, want := range []string{"backends.smtp.address:", "backends.smtp.verify:", "backends.smtp.verify_cache_ttl:"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate = %v, want %q", err, want)
		}
	}
	noIMAP := &SMTP{Opts: Options{Address: "127.0.0.1:25"}, Verify: VerifyIMAP}
	if err := noIMAP.Validate("backends.smtp"); err == nil {
		t.Error("imap mode without an IMAP backend validated")
	}
}
