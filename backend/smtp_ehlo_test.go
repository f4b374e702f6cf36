package backend

import (
	"context"
	"slices"
	"strings"
	"testing"
)

// smtpLoginOnce runs one smtp-auth login and closes the session.
func smtpLoginOnce(t *testing.T, b *SMTP) error {
	t.Helper()
	sess, err := b.Login(withTimeout(t), testClient, "alice@example.test", "pw")
	if err == nil {
		sess.Conn.Close()
	}
	return err
}

// verbs gives the command names of recorded lines, with mailgate's own
// EHLO ("EHLO mailgate.test") told apart from the client's.
func verbs(lines []string) []string {
	var out []string
	for _, l := range lines {
		name, arg, _ := strings.Cut(l, " ")
		if name == "EHLO" && arg == "mailgate.test" {
			name = "EHLO-own"
		}
		out = append(out, name)
	}
	return out
}

// TestSMTPOwnEHLORemembered: with XCLIENT, a login that knows the
// server's EHLO keywords from a moment ago (same greeting) sends XCLIENT
// without saying EHLO first; the client's EHLO after XCLIENT is still
// replayed (issue #20: no command the backend did not need).
func TestSMTPOwnEHLORemembered(t *testing.T) {
	f := &smtpFake{strictXC: true}
	_, b, _ := startSMTP(t, f, VerifySMTPAuth)
	for range 3 {
		if err := smtpLoginOnce(t, b); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{
		"EHLO-own", "XCLIENT", "EHLO", "AUTH",
		"XCLIENT", "EHLO", "AUTH",
		"XCLIENT", "EHLO", "AUTH",
	}
	if got := verbs(f.lines.all()); !slices.Equal(got, want) {
		t.Errorf("commands = %q, want %q", got, want)
	}
	if got := f.logins.all(); len(got) != 3 {
		t.Errorf("logins = %q", got)
	}
}

// TestSMTPOwnEHLOAgainOnNewGreeting: another greeting (a restarted or
// replaced server) means mailgate says EHLO again before XCLIENT.
func TestSMTPOwnEHLOAgainOnNewGreeting(t *testing.T) {
	_, b, _ := startSMTP(t, &smtpFake{}, VerifySMTPAuth)
	if err := smtpLoginOnce(t, b); err != nil {
		t.Fatal(err)
	}
	f := &smtpFake{greeting: "220 mx2.example.test ESMTP Postfix"}
	b.Opts.Address = newFakeServer(t, f.handle).addr()
	if err := smtpLoginOnce(t, b); err != nil {
		t.Fatal(err)
	}
	if got, want := verbs(f.lines.all()), []string{"EHLO-own", "XCLIENT", "EHLO", "AUTH"}; !slices.Equal(got, want) {
		t.Errorf("commands = %q, want %q", got, want)
	}
}

// TestSMTPChangedXCLIENTAttributes: a server that now takes fewer XCLIENT
// attributes refuses the XCLIENT sent from memory; mailgate says EHLO,
// sends XCLIENT as the server now says and the login goes through.
func TestSMTPChangedXCLIENTAttributes(t *testing.T) {
	_, b, _ := startSMTP(t, &smtpFake{}, VerifySMTPAuth)
	if err := smtpLoginOnce(t, b); err != nil {
		t.Fatal(err)
	}
	exts := slices.Clone(postfixExts)
	exts[len(exts)-1] = "XCLIENT NAME ADDR PROTO HELO PORT" // no DESTADDR, DESTPORT
	f := &smtpFake{exts: exts, strictXC: true}
	b.Opts.Address = newFakeServer(t, f.handle).addr()
	if err := smtpLoginOnce(t, b); err != nil {
		t.Fatalf("login after the server changed: %v", err)
	}
	if got, want := verbs(f.lines.all()), []string{"XCLIENT", "EHLO-own", "XCLIENT", "EHLO", "AUTH"}; !slices.Equal(got, want) {
		t.Errorf("commands = %q, want %q", got, want)
	}
	if l := f.lines.all()[2]; strings.Contains(l, "DESTADDR") {
		t.Errorf("second XCLIENT still sends DESTADDR: %q", l)
	}
	// What the server offers now is remembered.
	if err := smtpLoginOnce(t, b); err != nil {
		t.Fatal(err)
	}
	if got, want := verbs(f.lines.all()[5:]), []string{"XCLIENT", "EHLO", "AUTH"}; !slices.Equal(got, want) {
		t.Errorf("next login: commands = %q, want %q", got, want)
	}
}

// TestSMTPXCLIENTWithdrawn: a server that stopped granting XCLIENT fails
// the login as unavailable (as before, when the EHLO did not list it),
// and the next login says EHLO first again.
func TestSMTPXCLIENTWithdrawn(t *testing.T) {
	_, b, _ := startSMTP(t, &smtpFake{}, VerifySMTPAuth)
	if err := smtpLoginOnce(t, b); err != nil {
		t.Fatal(err)
	}
	exts := slices.Clone(postfixExts)[:len(postfixExts)-1] // no XCLIENT
	f := &smtpFake{exts: exts, xclientReply: "550 5.7.0 Error: insufficient authorization"}
	b.Opts.Address = newFakeServer(t, f.handle).addr()
	wantErr(t, smtpLoginOnce(t, b), ErrUnavailable)
	wantErr(t, smtpLoginOnce(t, b), ErrUnavailable)
	if got, want := verbs(f.lines.all()), []string{"XCLIENT", "EHLO-own", "EHLO-own"}; !slices.Equal(got, want) {
		t.Errorf("commands = %q, want %q", got, want)
	}
	if got := f.logins.all(); len(got) != 0 {
		t.Errorf("credentials sent to a server without XCLIENT: %q", got)
	}
}

// TestSMTPOwnEHLOAfterBackendError: an error of the server during a login
// drops what was remembered; the next login says EHLO before XCLIENT.
func TestSMTPOwnEHLOAfterBackendError(t *testing.T) {
	_, b, _ := startSMTP(t, &smtpFake{}, VerifySMTPAuth)
	if err := smtpLoginOnce(t, b); err != nil {
		t.Fatal(err)
	}
	bad := &smtpFake{authReply: "454 4.7.0 Temporary authentication failure"}
	b.Opts.Address = newFakeServer(t, bad.handle).addr()
	wantErr(t, smtpLoginOnce(t, b), ErrUnavailable)
	f := &smtpFake{}
	b.Opts.Address = newFakeServer(t, f.handle).addr()
	if err := smtpLoginOnce(t, b); err != nil {
		t.Fatal(err)
	}
	if got, want := verbs(bad.lines.all()), []string{"XCLIENT", "EHLO", "AUTH"}; !slices.Equal(got, want) {
		t.Errorf("failing server: commands = %q, want %q", got, want)
	}
	if got, want := verbs(f.lines.all()), []string{"EHLO-own", "XCLIENT", "EHLO", "AUTH"}; !slices.Equal(got, want) {
		t.Errorf("after the error: commands = %q, want %q", got, want)
	}
}

// FuzzSMTPLoginRemembered feeds arbitrary server output to an smtp-auth
// login with XCLIENT that knows the server's EHLO keywords (greeting:
// the script's first line): XCLIENT sent without EHLO, and the EHLO and
// XCLIENT again after a refusal. Errors are classified and never show
// the password.
func FuzzSMTPLoginRemembered(f *testing.F) {
	f.Add([]byte("220 mx\r\n220 mx\r\n250-mx\r\n250 AUTH PLAIN\r\n235 ok\r\n"))
	f.Add([]byte("220 mx\r\n501 5.5.4 Bad XCLIENT attribute name: DESTADDR\r\n250-mx\r\n250-XCLIENT ADDR PORT HELO PROTO\r\n250 AUTH PLAIN\r\n220 mx\r\n250-mx\r\n250 AUTH PLAIN\r\n235 ok\r\n"))
	f.Add([]byte("220 mx\r\n550 5.7.0 Error: insufficient authorization\r\n250-mx\r\n250 AUTH PLAIN\r\n"))
	f.Fuzz(func(t *testing.T, script []byte) {
		greet, _, _ := strings.Cut(string(script), "\n")
		_, _, text, _ := parseReplyLine([]byte(greet))
		fuzzBackend(t, script, func(ctx context.Context, o Options) (*Session, error) {
			b := &SMTP{Opts: o, Verify: VerifySMTPAuth, XCLIENT: true}
			b.rememberExtensions(text, []string{"PIPELINING", "AUTH PLAIN", "XCLIENT NAME ADDR PROTO HELO PORT DESTADDR DESTPORT"})
			return b.Login(ctx, testClient, "user", "s3cret")
		})
	})
}

// TestSMTPNoOwnEHLOWithoutXCLIENT: without XCLIENT and STARTTLS an EHLO
// of mailgate's own would tell nothing (the client's EHLO follows at
// once), so none is sent; with STARTTLS it still is (RFC 3207).
func TestSMTPNoOwnEHLOWithoutXCLIENT(t *testing.T) {
	for _, mode := range []string{VerifySMTPAuth, VerifyIMAP} {
		t.Run(mode, func(t *testing.T) {
			f := &smtpFake{}
			_, b, _ := startSMTP(t, f, mode)
			b.XCLIENT = false
			if err := smtpLoginOnce(t, b); err != nil {
				t.Fatal(err)
			}
			want := []string{"EHLO"}
			if mode == VerifySMTPAuth {
				want = append(want, "AUTH")
			}
			if got := verbs(f.lines.all()); !slices.Equal(got, want) {
				t.Errorf("commands = %q, want %q", got, want)
			}
		})
	}
}
