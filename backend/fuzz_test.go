package backend

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// FuzzXtext: the encoding is plain xtext characters only (so it can never
// end or extend an XCLIENT line) and decodes back to the input.
func FuzzXtext(f *testing.F) {
	for _, s := range []string{"", "alice@example.test", "a+b=c d", "\r\n\x00", "ü", "[UNAVAILABLE]"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		enc := xtext(s)
		var dec []byte
		for i := 0; i < len(enc); i++ {
			b := enc[i]
			if b == '+' {
				if i+2 >= len(enc) {
					t.Fatalf("xtext(%q) = %q: truncated +XX", s, enc)
				}
				v, err := strconv.ParseUint(enc[i+1:i+3], 16, 8)
				if err != nil || strings.ToUpper(enc[i+1:i+3]) != enc[i+1:i+3] {
					t.Fatalf("xtext(%q) = %q: bad hex", s, enc)
				}
				dec = append(dec, byte(v))
				i += 2
				continue
			}
			if !xtextPlain(b) {
				t.Fatalf("xtext(%q) = %q: raw octet %#x", s, enc, b)
			}
			dec = append(dec, b)
		}
		if string(dec) != s {
			t.Fatalf("xtext(%q) = %q decodes to %q", s, enc, dec)
		}
	})
}

// FuzzIMAPString: any CR/LF/NUL-free string, encoded as an IMAP string
// inside a LOGIN command, decodes to exactly the two arguments sent.
func FuzzIMAPString(f *testing.F) {
	f.Add("alice", "pw", false, false)
	f.Add(`a"b\c`, "{5}", false, false)
	f.Add("ü", "p w", true, false)
	f.Add("x", strings.Repeat("ä", 3000), false, true)
	f.Fuzz(func(t *testing.T, user, pass string, plus, minus bool) {
		if checkCredentials(user, pass) != nil {
			return
		}
		b := cmdBuilder{litPlus: plus, litMinus: minus}
		b.raw("A1 LOGIN ")
		b.str(user)
		b.raw(" ")
		b.str(pass)
		chunks := b.done()
		for i, c := range chunks[:len(chunks)-1] {
			if !bytes.HasSuffix(c, []byte("}\r\n")) {
				t.Fatalf("chunk %d %q does not end in a literal header", i, c)
			}
		}
		args, err := decodeBuilt(chunks)
		if err != nil {
			t.Fatalf("decode %q: %v", chunks, err)
		}
		want := []string{"A1", "LOGIN", user, pass}
		if strings.Join(args, "\x00") != strings.Join(want, "\x00") || len(args) != 4 {
			t.Fatalf("decoded %q, want %q", args, want)
		}
	})
}

// FuzzParseReplyLine: accepted lines have a 200-599 code and the text
// that followed the separator.
func FuzzParseReplyLine(f *testing.F) {
	for _, s := range []string{"250-SIZE 1000\r\n", "220 mx ESMTP\r\n", "535 5.7.8 no", "25", "999 x"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		code, _, text, ok := parseReplyLine(line)
		if !ok {
			return
		}
		if code < 200 || code > 599 {
			t.Fatalf("parseReplyLine(%q) code %d", line, code)
		}
		if !strings.Contains(string(line), text) {
			t.Fatalf("parseReplyLine(%q) text %q not from the line", line, text)
		}
	})
}

// FuzzParseResp: accepted lines are classified consistently.
func FuzzParseResp(f *testing.F) {
	for _, s := range []string{"* OK [CAPABILITY IMAP4rev1] hi\r\n", "a1 NO [UNAVAILABLE] x", "+ go", "* ID (\"a\" {3}\r\n", "* BYE"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		r, ok := parseResp(line)
		if !ok {
			return
		}
		switch r.kind {
		case respTagged:
			if !validTag(r.tag) || (r.status != "OK" && r.status != "NO" && r.status != "BAD") {
				t.Fatalf("parseResp(%q) = %+v", line, r)
			}
		case respUntagged:
			if (r.status == "") == (r.data == "") {
				t.Fatalf("parseResp(%q) = %+v: status xor data expected", line, r)
			}
		case respContinuation:
		default:
			t.Fatalf("parseResp(%q) kind %d", line, r.kind)
		}
		literalLen(line) // must not panic either
	})
}

// fuzzBackend runs login against a server that sends script (whatever the
// client says) and then closes. It must end with a classified error or a
// session, within the timeouts, without panicking.
func fuzzBackend(t *testing.T, script []byte, login func(ctx context.Context, o Options) (*Session, error)) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		go io.Copy(io.Discard, nc)
		_, _ = nc.Write(script)
	}()
	o := Options{Address: ln.Addr().String(), ConnectTimeout: time.Second, Timeout: 200 * time.Millisecond}
	sess, err := login(context.Background(), o)
	if sess != nil {
		sess.Conn.Close()
	}
	if err != nil && !errors.Is(err, ErrUnavailable) && !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("unclassified error %v", err)
	}
	if err != nil && strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("error reveals the password: %v", err)
	}
	ln.Close()
	<-done
}

// FuzzIMAPLogin feeds arbitrary server output to an IMAP login. A
// login that succeeds hands back a Reply whose last line is under the
// client's tag, never under one of ours.
func FuzzIMAPLogin(f *testing.F) {
	f.Add([]byte("* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] hi\r\nmg1 OK done\r\n"))
	f.Add([]byte("* OK hi\r\n* CAPABILITY IMAP4rev1 LITERAL+\r\nmg1 OK\r\nmg2 NO [AUTHENTICATIONFAILED] no\r\n"))
	f.Add([]byte("* OK hi\r\n* CAPABILITY IMAP4rev1\r\nmg1 OK\r\n+ go\r\n+ go\r\nmg2 OK\r\n"))
	f.Add([]byte("* OK [CAPABILITY IMAP4rev1 ID SASL-IR AUTH=PLAIN] hi\r\n* ID {3}\r\nabc\r\nmg1 OK\r\nmg2 OK\r\n"))
	f.Add([]byte("* OK [CAPABILITY IMAP4rev1 ID SASL-IR AUTH=PLAIN] hi\r\nmg1 OK\r\n* BAD Error in IMAP command received by server.\r\n"))
	f.Fuzz(func(t *testing.T, script []byte) {
		fuzzBackend(t, script, func(ctx context.Context, o Options) (*Session, error) {
			o.ForwardClient = true
			sess, err := (&IMAP{Opts: o}).Login(ctx, testClient, "a]1", "üser", "s3cret")
			if err == nil {
				lines := strings.SplitAfter(string(sess.Reply), "\n")
				if last := lines[len(lines)-2]; !strings.HasPrefix(last, "a]1 OK") {
					t.Fatalf("Reply %q does not end in the client's tagged OK", sess.Reply)
				}
			}
			return sess, err
		})
	})
}

// FuzzPOP3Login feeds arbitrary server output to a POP3 login.
func FuzzPOP3Login(f *testing.F) {
	f.Add([]byte("+OK [XCLIENT] hi\r\n+OK\r\n+OK\r\nSASL PLAIN\r\n.\r\n+OK in\r\n"))
	f.Add([]byte("+OK hi\r\n-ERR no\r\n+OK\r\n-ERR [SYS/TEMP] later\r\n"))
	f.Fuzz(func(t *testing.T, script []byte) {
		fuzzBackend(t, script, func(ctx context.Context, o Options) (*Session, error) {
			o.ForwardClient = true
			return (&POP3{Opts: o}).Login(ctx, testClient, "user", "s3cret")
		})
	})
}

// FuzzSMTPLogin feeds arbitrary server output to an smtp-auth login.
func FuzzSMTPLogin(f *testing.F) {
	f.Add([]byte("220 mx\r\n250-mx\r\n250-XCLIENT ADDR PORT HELO PROTO\r\n250 AUTH PLAIN\r\n220 mx\r\n250-mx\r\n250 AUTH PLAIN\r\n235 ok\r\n"))
	f.Add([]byte("220 mx\r\n250 mx\r\n535 5.7.8 no\r\n"))
	f.Fuzz(func(t *testing.T, script []byte) {
		fuzzBackend(t, script, func(ctx context.Context, o Options) (*Session, error) {
			return (&SMTP{Opts: o, Verify: VerifySMTPAuth, XCLIENT: true}).Login(ctx, testClient, "user", "s3cret")
		})
	})
}
