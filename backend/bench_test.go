package backend

import (
	"context"
	"testing"
)

// Run: go test -run '^$' -bench . -benchmem ./backend/

func BenchmarkIMAPLogin(b *testing.B) {
	f := &imapFake{}
	srv := newFakeServer(b, f.handle).addr()
	be := &IMAP{Opts: Options{Address: srv}}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		sess, err := be.Login(ctx, testClient, "a1", "alice@example.test", "secret")
		if err != nil {
			b.Fatal(err)
		}
		sess.Conn.Close()
	}
}

func BenchmarkPOP3Login(b *testing.B) {
	f := &pop3Fake{}
	srv := newFakeServer(b, f.handle).addr()
	be := &POP3{Opts: Options{Address: srv, ForwardClient: true}}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		sess, err := be.Login(ctx, testClient, "alice@example.test", "secret")
		if err != nil {
			b.Fatal(err)
		}
		sess.Conn.Close()
	}
}

// BenchmarkSMTPLoginCached: imap mode with a warm verification cache, so
// one SMTP session setup (XCLIENT, EHLO; EHLO, XCLIENT, EHLO before the
// keywords were remembered) per login.
func BenchmarkSMTPLoginCached(b *testing.B) {
	f := &smtpFake{}
	srv := newFakeServer(b, f.handle).addr()
	fi := &imapFake{}
	isrv := newFakeServer(b, fi.handle).addr()
	be := &SMTP{Opts: Options{Address: srv}, XCLIENT: true, Hostname: "mailgate.test", VerifyIMAP: &IMAP{Opts: Options{Address: isrv}}, CacheTTL: DefaultVerifyCacheTTL}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		sess, err := be.Login(ctx, testClient, "alice@example.test", "secret")
		if err != nil {
			b.Fatal(err)
		}
		sess.Conn.Close()
	}
}

// BenchmarkSMTPLoginAuth: smtp-auth mode without XCLIENT (as behind a
// PROXY header): the client's EHLO and AUTH PLAIN per login.
func BenchmarkSMTPLoginAuth(b *testing.B) {
	f := &smtpFake{}
	srv := newFakeServer(b, f.handle).addr()
	be := &SMTP{Opts: Options{Address: srv}, Verify: VerifySMTPAuth, Hostname: "mailgate.test"}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		sess, err := be.Login(ctx, testClient, "alice@example.test", "secret")
		if err != nil {
			b.Fatal(err)
		}
		sess.Conn.Close()
	}
}

func BenchmarkXtext(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_ = xtext("alice+tag=x@example.test")
	}
}

func BenchmarkCmdBuilderLogin(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		c := cmdBuilder{litPlus: true}
		c.raw("a1 LOGIN ")
		c.str(`alice"@example.test`)
		c.raw(" ")
		c.str("pässword")
		_ = c.done()
	}
}

func BenchmarkParseResp(b *testing.B) {
	line := []byte("a1 OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY THREAD=REFERENCES LITERAL+] Logged in\r\n")
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := parseResp(line); !ok {
			b.Fatal("parse failed")
		}
	}
}

func BenchmarkVerifyCacheHit(b *testing.B) {
	c := newVerifyCache(DefaultVerifyCacheTTL)
	c.add("alice@example.test", "secret")
	b.ReportAllocs()
	for b.Loop() {
		if !c.ok("alice@example.test", "secret") {
			b.Fatal("miss")
		}
	}
}
