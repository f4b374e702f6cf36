package backend

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

// dovecotGreetingLines is what Dovecot 2.3's auth service sends first.
var dovecotGreetingLines = []string{
	"VERSION\t1\t2", "MECH\tPLAIN\tplaintext", "MECH\tLOGIN\tplaintext", "SPID\t4242", "CUID\t7",
	"COOKIE\t0123456789abcdef0123456789abcdef", "DONE",
}

// fakeDovecotAuth answers the AUTH request with reply(id, decoded PLAIN
// message) and records the request line without its resp= value.
func fakeDovecotAuth(t *testing.T, rec *recorder, reply func(id, plain string) string) *fakeServer {
	return newFakeServer(t, func(fc *fakeConn) {
		for _, l := range dovecotGreetingLines {
			if _, err := fc.Write([]byte(l + "\n")); err != nil {
				return
			}
		}
		for {
			l, ok := fc.line()
			if !ok {
				return
			}
			if !strings.HasPrefix(l, "AUTH\t") {
				rec.add(l)
				continue
			}
			f := strings.Split(l, "\t")
			resp := strings.TrimPrefix(f[len(f)-1], "resp=")
			plain, _ := base64.StdEncoding.DecodeString(resp)
			rec.add(strings.Join(f[:len(f)-1], "\t"))
			_, _ = fc.Write([]byte(reply(f[1], string(plain)) + "\n"))
		}
	})
}

func TestDovecotAuthVerdicts(t *testing.T) {
	for _, tc := range []struct {
		name, reply string
		want        error
	}{
		{"ok", "OK\t%s\tuser=alice", nil},
		{"wrong password", "FAIL\t%s\tuser=alice", ErrAuthFailed},
		{"disabled", "FAIL\t%s\tuser=alice\tuser_disabled", ErrAuthFailed},
		{"nologin", "OK\t%s\tuser=alice\tnologin", ErrAuthFailed},
		{"temp", "FAIL\t%s\ttemp", ErrUnavailable},
		{"other id", "OK\t99", ErrUnavailable},
		{"cont", "CONT\t%s\t", ErrUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var rec recorder
			srv := fakeDovecotAuth(t, &rec, func(id, plain string) string {
				if plain != "\x00alice\x00s3cret" {
					return "FAIL\t" + id
				}
				return strings.ReplaceAll(tc.reply, "%s", id)
			})
			c := testClient
			c.TLS = &tls.ConnectionState{Version: tls.VersionTLS13}
			err := dovecotAuth(withTimeout(t), testOpts(t, srv.addr()), srv.addr(), "smtp", c, "alice", "s3cret")
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), "s3cret") {
				t.Fatalf("error reveals the password: %v", err)
			}
			got := strings.Join(rec.all(), "|")
			want := "VERSION\t1\t2|CPID\t"
			if !strings.HasPrefix(got, want) || !strings.HasSuffix(got, "AUTH\t1\tPLAIN\tservice=smtp\tlip=192.0.2.10\tlport=993\trip=81.2.69.142\trport=40001\tsecured\tsession=s-1234") {
				t.Fatalf("server got %q", got)
			}
		})
	}
}

// TestDovecotAuthRequestFields: a session id that is not plain is left
// out rather than sent; nothing else in the request comes from the client.
func TestDovecotAuthRequestFields(t *testing.T) {
	c := testClient
	c.Session = "x\tresp=AGEAYg=="
	if got := dovecotAuthRequest("smtp", c); strings.Contains(got, "session") || strings.Count(got, "\t") != 7 {
		t.Fatalf("request %q", got)
	}
}

func TestDovecotAuthDown(t *testing.T) {
	srv := newFakeServer(t, func(fc *fakeConn) {}) // accepts and closes
	err := dovecotAuth(withTimeout(t), testOpts(t, srv.addr()), srv.addr(), "smtp", testClient, "alice", "s3cret")
	wantErr(t, err, ErrNoService)
	err = dovecotAuth(context.Background(), testOpts(t, "127.0.0.1:1"), t.TempDir()+"/no-such-socket", "smtp", testClient, "alice", "s3cret")
	wantErr(t, err, ErrNoService)
}

func TestDovecotAuthNetwork(t *testing.T) {
	for in, want := range map[string]string{
		"/run/dovecot/auth-client": "unix", "127.0.0.1:12345": "tcp", "[::1]:1": "tcp",
		"run/auth": "", "127.0.0.1": "", ":12": "", "h:0": "",
	} {
		n, _, err := DovecotAuthNetwork(in)
		if n != want || (err == nil) != (want != "") {
			t.Errorf("%q: %q, %v; want %q", in, n, err, want)
		}
	}
}

func TestSMTPValidateMode(t *testing.T) {
	for _, tc := range []struct {
		b    *SMTP
		want string
	}{
		{&SMTP{Verify: VerifyDovecotAuth}, "dovecot_auth: verify: dovecot-auth needs"},
		{&SMTP{Verify: VerifyDovecotAuth, DovecotAuth: "auth"}, "dovecot_auth: \"auth\""},
		{&SMTP{Verify: VerifyIMAP, DovecotAuth: "/run/a"}, "not dovecot-auth"},
		{&SMTP{Verify: "ldap"}, "not one of imap, smtp-auth, dovecot-auth"},
		{&SMTP{Verify: VerifySMTPAuth, XCLIENT: true, Opts: Options{ProxyProtocol: ProxyV2}}, "xclient is set too"},
		{&SMTP{Verify: VerifyDovecotAuth, DovecotAuth: "/run/a", Opts: Options{ProxyProtocol: ProxyV1}}, "needs verify: smtp-auth"},
		{&SMTP{Verify: VerifyDovecotAuth, DovecotAuth: "/run/a", XCLIENT: true}, ""},
		{&SMTP{Verify: VerifySMTPAuth, Opts: Options{ProxyProtocol: ProxyV2}}, ""},
	} {
		err := tc.b.ValidateMode("backends.smtp")
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%+v: %v, want %q", tc.b.Opts, err, tc.want)
		}
	}
}

// FuzzDovecotAuth feeds arbitrary server output to a dovecot-auth check:
// it never panics or hangs, classifies every error, never quotes the
// password, and says yes only to an OK for our id.
func FuzzDovecotAuth(f *testing.F) {
	f.Add([]byte(strings.Join(dovecotGreetingLines, "\n") + "\nOK\t1\tuser=alice\n"))
	f.Add([]byte(strings.Join(dovecotGreetingLines, "\n") + "\nFAIL\t1\tuser=alice\n"))
	f.Add([]byte("VERSION\t1\t2\nMECH\tLOGIN\nDONE\n"))
	f.Add([]byte("VERSION\t2\t0\n"))
	f.Fuzz(func(t *testing.T, script []byte) {
		fuzzBackend(t, script, func(ctx context.Context, o Options) (*Session, error) {
			err := dovecotAuth(ctx, o, o.Address, "smtp", testClient, "alice", "s3cret")
			if err == nil && !strings.Contains("\n"+string(script), "\nOK\t1") {
				t.Fatalf("accepted without OK for our id: %q", script)
			}
			return nil, err
		})
	})
}
