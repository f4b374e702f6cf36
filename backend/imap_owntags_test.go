package backend

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// oddTags are legal IMAP tags (RFC 9051 9: any ASTRING-CHAR but "+")
// that a parser keyed to atoms may not take, and tags no server would.
var oddTags = []string{"a]1", "]", "x]]y", "~!#$&'/:;<=>?@[^`|]", strings.Repeat("t", 200), "a b", "tä"}

// TestIMAPClientTagNeverSent: whatever tag the client used, the backend
// sees only mailgate's own tags, and Reply is the backend's tagged OK
// with the client's tag in place of ours, response code and text kept.
func TestIMAPClientTagNeverSent(t *testing.T) {
	for _, caps := range []string{fakeCaps, "IMAP4rev1 ID", "IMAP4rev1"} { // SASL-IR; LOGIN behind ID; LOGIN with a literal
		for _, tag := range oddTags {
			f := &imapFake{caps: caps, untagged: []string{"* CAPABILITY IMAP4rev1 IDLE"}}
			_, b := startIMAP(t, f)
			b.Opts.ForwardClient = true
			sess, err := b.Login(withTimeout(t), testClient, tag, "alice", "pw ü")
			if err != nil {
				t.Fatalf("caps %q, tag %q: %v", caps, tag, err)
			}
			sess.Conn.Close()
			want := "* CAPABILITY IMAP4rev1 IDLE\r\n" + tag + " OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n"
			if string(sess.Reply) != want {
				t.Errorf("caps %q: Reply = %q, want %q", caps, sess.Reply, want)
			}
			for _, got := range f.tags.all() {
				if !strings.HasPrefix(got, "mg") {
					t.Errorf("caps %q, client tag %q: backend saw tag %q, not one of ours", caps, tag, got)
				}
			}
		}
	}
}

// TestIMAPLoginEndsOnImpossibleAnswer: an answer that cannot precede the
// login's tagged reply ends the login at once with ErrUnavailable, not
// after the read timeout (here 30s).
func TestIMAPLoginEndsOnImpossibleAnswer(t *testing.T) {
	for name, f := range map[string]*imapFake{
		"untagged BAD":   {silentLogin: true, untagged: []string{"* BAD Error in IMAP command received by server."}},
		"untagged BYE":   {silentLogin: true, untagged: []string{"* BYE Disconnected for inactivity."}},
		"other tag":      {silentLogin: true, untagged: []string{"a]1 OK [CAPABILITY IMAP4rev1] Logged in"}},
		"garbage":        {silentLogin: true, untagged: []string{"\x00\x01 garbage"}},
		"continuation":   {silentLogin: true, untagged: []string{"+ more?"}},
		"closed at once": {silentLogin: true, closeLogin: true},
	} {
		t.Run(name, func(t *testing.T) {
			_, b := startIMAP(t, f)
			b.Opts.Timeout = 30 * time.Second
			b.Opts.LoginTimeout = 30 * time.Second
			start := time.Now()
			_, err := b.Login(withTimeout(t), testClient, "a1", "alice", "pw")
			wantErr(t, err, ErrUnavailable)
			if errors.Is(err, ErrNoService) || errors.Is(err, ErrAuthFailed) {
				t.Errorf("error %v: want neither ErrNoService nor ErrAuthFailed", err)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("login ended after %v, want at once", d)
			}
		})
	}
}

// TestIMAPLoginTimeout: a backend that takes the login and never answers
// is given up after LoginTimeout, though each read may take Timeout.
func TestIMAPLoginTimeout(t *testing.T) {
	f := &imapFake{silentLogin: true}
	_, b := startIMAP(t, f)
	b.Opts.Timeout = 30 * time.Second
	b.Opts.LoginTimeout = 300 * time.Millisecond
	start := time.Now()
	_, err := b.Login(withTimeout(t), testClient, "a1", "alice", "pw")
	wantErr(t, err, ErrUnavailable)
	if !strings.Contains(err.Error(), "login_timeout") {
		t.Errorf("error %q does not name login_timeout", err)
	}
	if errors.Is(err, ErrNoService) {
		t.Errorf("a silent login reply is not the server being down: %v", err)
	}
	if d := time.Since(start); d < 300*time.Millisecond || d > 8*time.Second {
		t.Errorf("login ended after %v, want about 300ms", d)
	}
}

// TestNoServiceErrors: a refused connection and a bad greeting say the
// server is down (ErrNoService); a refused password does not.
func TestNoServiceErrors(t *testing.T) {
	b := &IMAP{Opts: testOpts(t, closedAddr(t))}
	_, err := b.Login(withTimeout(t), testClient, "a1", "alice", "pw")
	wantErr(t, err, ErrNoService)
	wantErr(t, err, ErrUnavailable)

	_, b = startIMAP(t, &imapFake{greeting: "* BYE Too many connections"})
	_, err = b.Login(withTimeout(t), testClient, "a1", "alice", "pw")
	wantErr(t, err, ErrNoService)

	_, p := startPOP3(t, &pop3Fake{greeting: "-ERR busy"})
	_, err = p.Login(withTimeout(t), testClient, "alice", "pw")
	wantErr(t, err, ErrNoService)

	_, b = startIMAP(t, &imapFake{loginReply: "NO [AUTHENTICATIONFAILED] Authentication failed."})
	_, err = b.Login(withTimeout(t), testClient, "a1", "alice", "pw")
	wantErr(t, err, ErrAuthFailed)
	if errors.Is(err, ErrNoService) {
		t.Errorf("refused password is ErrNoService: %v", err)
	}
}

// TestPOP3LoginEndsOnImpossibleAnswer: a POP3 reply that is neither +OK
// nor -ERR where one is due ends the login with ErrUnavailable; -ERR to
// XCLIENT only costs the forwarded address.
func TestPOP3LoginEndsOnImpossibleAnswer(t *testing.T) {
	for _, reply := range []string{"garbage", "* BAD what", "+OKAY"} {
		_, b := startPOP3(t, &pop3Fake{xclientReply: reply})
		b.Opts.ForwardClient = true
		_, err := b.Login(withTimeout(t), testClient, "alice", "pw")
		wantErr(t, err, ErrUnavailable)
	}
	_, b := startPOP3(t, &pop3Fake{xclientReply: "-ERR not allowed"})
	b.Opts.ForwardClient = true
	sess, err := b.Login(withTimeout(t), testClient, "alice", "pw")
	if err != nil {
		t.Fatalf("-ERR to XCLIENT: %v", err)
	}
	sess.Conn.Close()
}
