//go:build integration

// Tests against a real Dovecot and Postfix, started once by TestMain
// through integration/mailstack on free loopback ports with a private
// configuration. They check what fakes cannot:
// that Dovecot and Postfix accept exactly what we send (ID fields, POP3
// XCLIENT, Postfix XCLIENT attributes and xtext, the replayed EHLO).
//
// Run: go test -race -tags integration -run Real -v ./backend/
// Needs root, dovecot (imapd, pop3d) and postfix; skips without them
// unless CI=true.
package backend

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/integration/mailstack"
)

// real is the running backends; nil when unavailable (realSkip says why).
var (
	real     *realServers
	realSkip string
)

type realServers struct {
	*mailstack.Stack
}

// realUsers: "+" in a name (xtext-encoded in XCLIENT LOGIN=) and a
// password with quotes, a backslash, a space, UTF-8 and something that
// looks like an IMAP literal.
var realUsers = map[string]string{
	"alice@example.test":      "alicepass",
	"weird+user@example.test": "p\"a\\ss wörd{5}",
}

func TestMain(m *testing.M) {
	os.Exit(runReal(m))
}

func runReal(m *testing.M) int {
	opts := mailstack.Options{
		Users:        realUsers,
		Postfix:      true,
		Name:         "mailgate-backend",
		NoTLS:        true,
		Verbose:      true,
		AnyUserChars: true,
		Watchdog:     true,
	}
	if missing := mailstack.Missing(opts); len(missing) > 0 {
		realSkip = "backend integration: " + strings.Join(missing, ", ") + " not installed"
		if os.Getenv("CI") == "true" {
			fmt.Fprintln(os.Stderr, realSkip+"; CI=true, failing")
			return 1
		}
		return m.Run()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	st, err := mailstack.Start(ctx, opts)
	cancel()
	if st != nil {
		defer st.Stop()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "backend integration: starting Dovecot/Postfix:", err)
		if st != nil {
			fmt.Fprintln(os.Stderr, st.DovecotLog(), st.PostfixLog(), st.StartLog())
		}
		return 1
	}
	real = &realServers{st}
	code := m.Run()
	if code != 0 {
		fmt.Fprintln(os.Stderr, "backend integration: logs kept in", st.Dir)
		st.Keep = true
	}
	return code
}

func needReal(t *testing.T) *realServers {
	t.Helper()
	if real == nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(realSkip)
		}
		t.Skip(realSkip)
	}
	return real
}

// waitLog waits until a line of log() contains all parts.
func (rs *realServers) waitLog(t *testing.T, log func() string, parts ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := mailstack.WaitLog(ctx, log, parts...); err != nil {
		t.Fatal(err)
	}
}

func (rs *realServers) addr(port int) string { return mailstack.Addr(port) }

// realClient looks foreign; each test uses its own address so Dovecot's
// auth penalty after a wrong password does not slow the others.
func realClient(last byte) Client {
	return Client{
		Addr:    netip.AddrPortFrom(netip.AddrFrom4([4]byte{81, 2, 69, last}), 40000+uint16(last)),
		Local:   netip.MustParseAddrPort("127.0.0.9:993"),
		Session: "mgtest" + strconv.Itoa(int(last)),
		Helo:    "client" + strconv.Itoa(int(last)) + ".example",
		HeloCmd: "EHLO",
	}
}

func TestRealIMAP(t *testing.T) {
	rs := needReal(t)
	for _, force := range []bool{false, true} {
		b := &IMAP{Opts: Options{Address: rs.addr(rs.IMAP), ForwardClient: true, Logger: testLogger(t)}, forceLogin: force}
		c := realClient(142)
		for _, cred := range [][2]string{{"alice@example.test", realUsers["alice@example.test"]}, {"weird+user@example.test", realUsers["weird+user@example.test"]}} {
			sess, err := b.Login(withTimeout(t), c, "T1", cred[0], cred[1])
			if err != nil {
				t.Fatalf("forceLogin=%v %s: %v", force, cred[0], err)
			}
			if !strings.HasPrefix(string(sess.Reply), "T1 OK [CAPABILITY ") {
				t.Errorf("Reply = %q", sess.Reply)
			}
			io.WriteString(sess.Conn, "T2 SELECT INBOX\r\n")
			_ = sess.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			out, _ := readUntil(sess.Conn, "T2 ")
			if !strings.Contains(out, "T2 OK") {
				t.Errorf("SELECT after login: %q", out)
			}
			sess.Conn.Close()
		}
	}
	rs.waitLog(t, rs.DovecotLog, "imap-login: Info: Login: user=<alice@example.test>", "rip=81.2.69.142", "lip=127.0.0.9", "session=<mgtest142>")

	b := &IMAP{Opts: Options{Address: rs.addr(rs.IMAP), ForwardClient: true}}
	_, err := b.Login(withTimeout(t), realClient(201), "T1", "alice@example.test", "wrong")
	wantErr(t, err, ErrAuthFailed)
}

// statOK is a logged-in POP3 session's answer to STAT (RFC 1939 5).
var statOK = regexp.MustCompile(`^\+OK \d+ \d+\r\n$`)

func TestRealPOP3(t *testing.T) {
	rs := needReal(t)
	b := &POP3{Opts: Options{Address: rs.addr(rs.POP3), ForwardClient: true, Logger: testLogger(t)}}
	for _, cred := range [][2]string{{"alice@example.test", realUsers["alice@example.test"]}, {"weird+user@example.test", realUsers["weird+user@example.test"]}} {
		sess, err := b.Login(withTimeout(t), realClient(143), cred[0], cred[1])
		if err != nil {
			t.Fatalf("%s: %v", cred[0], err)
		}
		if !strings.HasPrefix(string(sess.Reply), "+OK") {
			t.Errorf("Reply = %q", sess.Reply)
		}
		io.WriteString(sess.Conn, "STAT\r\n")
		_ = sess.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		out, _ := readUntil(sess.Conn, "+OK")
		// The maildrop may hold mail other tests delivered; what counts
		// is that the session is logged in and answers STAT.
		if !statOK.MatchString(out) {
			t.Errorf("STAT after login: %q", out)
		}
		sess.Conn.Close()
	}
	rs.waitLog(t, rs.DovecotLog, "pop3-login: Info: Login: user=<alice@example.test>", "rip=81.2.69.143", "session=<mgtest143>")
	caps, err := b.Capabilities(withTimeout(t))
	if err != nil || !strings.Contains(strings.Join(caps, " "), "UIDL") {
		t.Errorf("Capabilities = %q, %v", caps, err)
	}
	_, err = b.Login(withTimeout(t), realClient(202), "alice@example.test", "wrong")
	wantErr(t, err, ErrAuthFailed)
}

// sendMail runs one transaction on a spliced-ready SMTP session.
func sendMail(t *testing.T, sess *Session, subject string) {
	t.Helper()
	defer sess.Conn.Close()
	_ = sess.Conn.SetDeadline(time.Now().Add(20 * time.Second))
	io.WriteString(sess.Conn, "MAIL FROM:<alice@example.test>\r\n")
	if out, _ := readUntil(sess.Conn, "250 "); !strings.Contains(out, "250 ") {
		t.Fatalf("MAIL FROM: %q", out)
	}
	io.WriteString(sess.Conn, "RCPT TO:<alice@example.test>\r\n")
	if out, _ := readUntil(sess.Conn, "250 "); !strings.Contains(out, "250 ") {
		t.Fatalf("RCPT TO: %q", out)
	}
	io.WriteString(sess.Conn, "DATA\r\n")
	if out, _ := readUntil(sess.Conn, "354 "); !strings.Contains(out, "354 ") {
		t.Fatalf("DATA: %q", out)
	}
	io.WriteString(sess.Conn, "Subject: "+subject+"\r\n\r\nhello\r\n.\r\n")
	if out, _ := readUntil(sess.Conn, "250 "); !strings.Contains(out, "250 ") {
		t.Fatalf("end of data: %q", out)
	}
}

func TestRealSMTPIMAPVerify(t *testing.T) {
	rs := needReal(t)
	b := &SMTP{
		Opts:       Options{Address: rs.addr(rs.SMTP), Logger: testLogger(t)},
		Verify:     VerifyIMAP,
		XCLIENT:    true,
		Hostname:   "mailgate.test",
		VerifyIMAP: &IMAP{Opts: Options{Address: rs.addr(rs.IMAP), ForwardClient: true}},
		CacheTTL:   time.Minute,
	}
	exts, err := b.Extensions(withTimeout(t))
	if err != nil || !strings.Contains(strings.Join(exts, "|"), "XCLIENT") {
		t.Fatalf("Extensions = %q, %v", exts, err)
	}
	for _, user := range []string{"alice@example.test", "weird+user@example.test"} {
		pass := realUsers[user]
		sess, err := b.Login(withTimeout(t), realClient(144), user, pass)
		if err != nil {
			t.Fatalf("%s: %v", user, err)
		}
		sendMail(t, sess, "imap-verify "+user)
	}
	// Postfix took the client address and the login from XCLIENT (LOGIN=
	// xtext-decoded: "+" arrives as "+"), and the client's EHLO name.
	rs.waitLog(t, rs.PostfixLog, "client=unknown[81.2.69.144]", "sasl_username=weird+user@example.test")
	rs.waitLog(t, rs.PostfixLog, "client=unknown[81.2.69.144]", "sasl_username=alice@example.test")

	_, err = b.Login(withTimeout(t), realClient(203), "alice@example.test", "wrong")
	wantErr(t, err, ErrAuthFailed)
}

func TestRealSMTPAuth(t *testing.T) {
	rs := needReal(t)
	b := &SMTP{
		Opts:     Options{Address: rs.addr(rs.Submission), Logger: testLogger(t)},
		Verify:   VerifySMTPAuth,
		XCLIENT:  true,
		Hostname: "mailgate.test",
	}
	sess, err := b.Login(withTimeout(t), realClient(145), "alice@example.test", "alicepass")
	if err != nil {
		t.Fatal(err)
	}
	sendMail(t, sess, "smtp-auth")
	rs.waitLog(t, rs.PostfixLog, "client=unknown[81.2.69.145]", "sasl_method=PLAIN", "sasl_username=alice@example.test")

	_, err = b.Login(withTimeout(t), realClient(204), "alice@example.test", "wrong")
	wantErr(t, err, ErrAuthFailed)
}
