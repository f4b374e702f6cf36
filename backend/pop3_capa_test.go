package backend

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
)

// login runs one POP3 backend login and closes the session.
func pop3LoginOnce(t *testing.T, b *POP3, pass string) error {
	t.Helper()
	sess, err := b.Login(withTimeout(t), testClient, "alice@example.test", pass)
	if err == nil {
		sess.Conn.Close()
	}
	return err
}

// TestPOP3CapaRememberedBetweenLogins: the second login with the same
// greeting does not ask CAPA again (issue #20: the backend pays no more
// per login behind mailgate than behind nginx). XCLIENT still goes first,
// on its own (TestPOP3XclientOwnRoundTrip).
func TestPOP3CapaRememberedBetweenLogins(t *testing.T) {
	f := &pop3Fake{}
	_, b := startPOP3(t, f)
	b.Opts.ForwardClient = true
	for range 3 {
		if err := pop3LoginOnce(t, b, "pw"); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"XCLIENT", "CAPA", "AUTH", "XCLIENT", "AUTH", "XCLIENT", "AUTH"}
	if got := f.cmds.all(); !slices.Equal(got, want) {
		t.Errorf("commands = %q, want %q", got, want)
	}
	if got := f.xclient.all(); len(got) != 3 || got[2] != "ADDR=81.2.69.142 PORT=40001 SESSION=s-1234" {
		t.Errorf("XCLIENT args = %q", got)
	}
	if got := f.logins.all(); len(got) != 3 {
		t.Errorf("logins = %q", got)
	}
}

// TestPOP3CapaWithoutPipelining: without PIPELINING, XCLIENT waits for
// its reply before the login, and CAPA is still not asked again.
func TestPOP3CapaWithoutPipelining(t *testing.T) {
	f := &pop3Fake{capa: []string{"TOP", "UIDL", "USER", "SASL PLAIN"}}
	_, b := startPOP3(t, f)
	b.Opts.ForwardClient = true
	for range 2 {
		if err := pop3LoginOnce(t, b, "pw"); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"XCLIENT", "CAPA", "AUTH", "XCLIENT", "AUTH"}
	if got := f.cmds.all(); !slices.Equal(got, want) {
		t.Errorf("commands = %q, want %q", got, want)
	}
}

// TestPOP3CapaAskedAgainOnNewGreeting: another greeting (a restarted or
// replaced server) means CAPA is asked again; an APOP timestamp, new on
// every connection, does not count as another greeting.
func TestPOP3CapaAskedAgainOnNewGreeting(t *testing.T) {
	f1 := &pop3Fake{greeting: "+OK Dovecot ready. <1896.697170952@dbc.mtview.ca.us>"}
	_, b := startPOP3(t, f1)
	f2 := &pop3Fake{greeting: "+OK Dovecot ready. <1897.697170953@dbc.mtview.ca.us>"}
	srv2 := newFakeServer(t, f2.handle)
	f3 := &pop3Fake{greeting: "+OK Dovecot (Debian) ready."}
	srv3 := newFakeServer(t, f3.handle)

	if err := pop3LoginOnce(t, b, "pw"); err != nil {
		t.Fatal(err)
	}
	b.Opts.Address = srv2.addr()
	if err := pop3LoginOnce(t, b, "pw"); err != nil {
		t.Fatal(err)
	}
	b.Opts.Address = srv3.addr()
	if err := pop3LoginOnce(t, b, "pw"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		f    *pop3Fake
		want []string
	}{
		{"first server", f1, []string{"CAPA", "AUTH"}},
		{"same greeting, new APOP timestamp", f2, []string{"AUTH"}},
		{"changed greeting", f3, []string{"CAPA", "AUTH"}},
	} {
		if got := c.f.cmds.all(); !slices.Equal(got, c.want) {
			t.Errorf("%s: commands = %q, want %q", c.name, got, c.want)
		}
	}
}

// TestPOP3CapaForgottenAfterBackendError: a backend error drops what was
// remembered, so the next login asks CAPA again.
func TestPOP3CapaForgottenAfterBackendError(t *testing.T) {
	good := &pop3Fake{}
	_, b := startPOP3(t, good)
	bad := &pop3Fake{authReply: "-ERR [SYS/TEMP] Temporary authentication failure."}
	badSrv := newFakeServer(t, bad.handle)
	after := &pop3Fake{}
	afterSrv := newFakeServer(t, after.handle)

	if err := pop3LoginOnce(t, b, "pw"); err != nil {
		t.Fatal(err)
	}
	b.Opts.Address = badSrv.addr()
	wantErr(t, pop3LoginOnce(t, b, "pw"), ErrUnavailable)
	b.Opts.Address = afterSrv.addr()
	if err := pop3LoginOnce(t, b, "pw"); err != nil {
		t.Fatal(err)
	}
	if got, want := bad.cmds.all(), []string{"AUTH"}; !slices.Equal(got, want) {
		t.Errorf("failing server: commands = %q, want %q", got, want)
	}
	if got, want := after.cmds.all(), []string{"CAPA", "AUTH"}; !slices.Equal(got, want) {
		t.Errorf("after the error: commands = %q, want %q", got, want)
	}
}

// TestPOP3CapaChangedGoodPasswordLogsIn: a server that stopped offering
// what was remembered (here SASL PLAIN) refuses the login made from the
// memory; mailgate asks CAPA, sees the change and logs in the way the
// server offers now, so a right password never becomes a failure.
func TestPOP3CapaChangedGoodPasswordLogsIn(t *testing.T) {
	before := &pop3Fake{}
	_, b := startPOP3(t, before)
	b.Opts.ForwardClient = true
	now := &pop3Fake{capa: []string{"TOP", "UIDL", "USER", "PIPELINING"}, noAuth: true}
	nowSrv := newFakeServer(t, now.handle) // same greeting, no SASL PLAIN

	if err := pop3LoginOnce(t, b, "pw"); err != nil {
		t.Fatal(err)
	}
	b.Opts.Address = nowSrv.addr()
	if err := pop3LoginOnce(t, b, "pw"); err != nil {
		t.Fatalf("right password after the server changed: %v", err)
	}
	if got, want := now.cmds.all(), []string{"XCLIENT", "AUTH", "CAPA", "USER", "PASS"}; !slices.Equal(got, want) {
		t.Errorf("commands = %q, want %q", got, want)
	}
	// What it offers now is remembered.
	if err := pop3LoginOnce(t, b, "pw"); err != nil {
		t.Fatal(err)
	}
	if got, want := now.cmds.all()[5:], []string{"XCLIENT", "USER", "PASS"}; !slices.Equal(got, want) {
		t.Errorf("next login: commands = %q, want %q", got, want)
	}
}

// TestPOP3CapaWrongPasswordNotRetried: a wrong password is refused once;
// CAPA unchanged, the login is not sent again.
func TestPOP3CapaWrongPasswordNotRetried(t *testing.T) {
	_, b := startPOP3(t, &pop3Fake{})
	if err := pop3LoginOnce(t, b, "pw"); err != nil {
		t.Fatal(err)
	}
	f := &pop3Fake{authReply: "-ERR [AUTH] Authentication failed."}
	b.Opts.Address = newFakeServer(t, f.handle).addr()
	wantErr(t, pop3LoginOnce(t, b, "wrong"), ErrAuthFailed)
	if got, want := f.cmds.all(), []string{"AUTH", "CAPA"}; !slices.Equal(got, want) {
		t.Errorf("commands = %q, want %q", got, want)
	}
	if got := f.logins.all(); len(got) != 1 {
		t.Errorf("logins sent = %q, want 1 (no retry)", got)
	}
}

func TestCapaGreeting(t *testing.T) {
	for in, want := range map[string]string{
		"+OK Dovecot ready.\r\n":                                "+OK Dovecot ready.",
		"+OK POP3 server ready <1896.697170952@dbc.mtview>\r\n": "+OK POP3 server ready ",
		"+OK a <b> c <d\r\n":                                    "+OK a <b> c <d",
		"+OK <\n":                                               "+OK <",
		"":                                                      "",
	} {
		if got := capaGreeting([]byte(in)); got != want {
			t.Errorf("capaGreeting(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzCapaGreeting: the key of a greeting never holds its line end, is
// never longer than the greeting, and two greetings that differ only in
// their APOP timestamp have the same key.
func FuzzCapaGreeting(f *testing.F) {
	f.Add([]byte("+OK Dovecot ready.\r\n"), []byte("1896.697170952@host"))
	f.Add([]byte("+OK <\n"), []byte(""))
	f.Add([]byte("+OK a <b> c <d"), []byte("x>y"))
	f.Fuzz(func(t *testing.T, greet, stamp []byte) {
		// A greeting as readLine returns it: one line ending in LF.
		greet = append(bytes.ReplaceAll(greet, []byte("\n"), nil), "\r\n"...)
		k := capaGreeting(greet)
		if len(k) > len(greet) || strings.ContainsAny(k, "\n") {
			t.Fatalf("capaGreeting(%q) = %q", greet, k)
		}
		body := bytes.TrimSuffix(greet, []byte("\r\n"))
		if bytes.ContainsAny(body, "<>\r") || bytes.ContainsAny(stamp, "<>\r\n") {
			return
		}
		a := capaGreeting(append(append(append(slices.Clone(body), " <"...), stamp...), ">\r\n"...))
		b := capaGreeting(append(slices.Clone(body), " <other.1@host>\r\n"...))
		if a != b {
			t.Fatalf("APOP timestamps %q and %q give keys %q and %q", stamp, "other.1@host", a, b)
		}
	})
}

// FuzzPOP3LoginRemembered feeds arbitrary server output to a POP3 login
// that remembers CAPA lines from an earlier login with the same greeting
// (the greeting is the script's first line): the login made from the
// memory, the XCLIENT before it, and the CAPA check after a
// refusal. Errors are classified and never show the password.
func FuzzPOP3LoginRemembered(f *testing.F) {
	f.Add([]byte("+OK [XCLIENT] hi\r\n+OK Updated\r\n+OK in\r\n"), true)
	f.Add([]byte("+OK [XCLIENT] hi\r\n+OK Updated\r\n-ERR unsupported\r\n+OK\r\nUSER\r\n.\r\n+OK\r\n+OK in\r\n"), true)
	f.Add([]byte("+OK hi\r\n+OK\r\n-ERR [AUTH] no\r\n+OK\r\nSASL PLAIN\r\nPIPELINING\r\n.\r\n"), false)
	f.Fuzz(func(t *testing.T, script []byte, plain bool) {
		greet, _, _ := bytes.Cut(script, []byte("\n"))
		caps := []string{"PIPELINING", "USER"}
		if plain {
			caps = append(caps, "SASL PLAIN")
		}
		fuzzBackend(t, script, func(ctx context.Context, o Options) (*Session, error) {
			o.ForwardClient = true
			b := &POP3{Opts: o}
			b.login.remember(capaGreeting(greet), caps)
			return b.Login(ctx, testClient, "user", "s3cret")
		})
	})
}

// TestPOP3XclientOwnRoundTrip: the login command is written only after
// the XCLIENT reply was read, with CAPA remembered and PIPELINING offered
// too. Sent together, Dovecot's two small replies meet Nagle's algorithm
// and our delayed ACK: a 40 ms stall in about 4 logins of 10.
func TestPOP3XclientOwnRoundTrip(t *testing.T) {
	var early recorder
	f := &pop3Fake{seen: func(fc *fakeConn, cmd string) {
		if cmd == "XCLIENT" && fc.br.Buffered() > 0 {
			early.add("command after XCLIENT before its reply")
		}
	}}
	_, b := startPOP3(t, f)
	b.Opts.ForwardClient = true
	for range 3 {
		if err := pop3LoginOnce(t, b, "pw"); err != nil {
			t.Fatal(err)
		}
	}
	if got := early.all(); len(got) > 0 {
		t.Errorf("%q: the login went out with XCLIENT", got)
	}
	want := []string{"XCLIENT", "CAPA", "AUTH", "XCLIENT", "AUTH", "XCLIENT", "AUTH"}
	if got := f.cmds.all(); !slices.Equal(got, want) {
		t.Errorf("commands = %q, want %q", got, want)
	}
}
