package demo

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-smtp"
)

// testLogger routes the servers' logs to t.Log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func startT(t *testing.T) *Backends {
	t.Helper()
	b, err := Start(context.Background(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func login(t *testing.T, b *Backends, user string) *imapclient.Client {
	t.Helper()
	c, err := imapclient.DialInsecure(b.IMAPAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Login(user, b.Users[user]).Wait(); err != nil {
		t.Fatalf("login %s: %v", user, err)
	}
	return c
}

// inbox returns every message in the user's INBOX, raw.
func inbox(t *testing.T, c *imapclient.Client) [][]byte {
	t.Helper()
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if sel.NumMessages == 0 {
		return nil
	}
	var seq imap.SeqSet
	seq.AddRange(1, sel.NumMessages)
	msgs, err := c.Fetch(seq, &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{Peek: true}}}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, m := range msgs {
		for _, b := range m.BodySection {
			out = append(out, b.Bytes)
		}
	}
	return out
}

func TestStartUsersAndWelcome(t *testing.T) {
	b := startT(t)
	for _, a := range []string{b.IMAPAddr, b.SMTPAddr} {
		host, _, err := net.SplitHostPort(a)
		if err != nil || host != "127.0.0.1" {
			t.Fatalf("address %q is not on 127.0.0.1 (%v)", a, err)
		}
	}
	want := map[string]string{"alice@example.test": "alicepass", "bob@example.test": "bobpass"}
	if len(b.Users) != len(want) {
		t.Fatalf("Users = %v, want %v", b.Users, want)
	}
	for u, p := range want {
		if b.Users[u] != p {
			t.Fatalf("Users[%q] = %q, want %q", u, b.Users[u], p)
		}
		msgs := inbox(t, login(t, b, u))
		if len(msgs) != 1 || !bytes.Contains(msgs[0], []byte("Subject: Welcome to the mailgate demo")) {
			t.Fatalf("%s INBOX = %q, want one welcome message", u, msgs)
		}
		if !bytes.Contains(msgs[0], []byte("To: <"+u+">")) {
			t.Errorf("welcome for %s not addressed to them:\n%s", u, msgs[0])
		}
	}
}

// TestIMAPCapabilities: the demo does not claim ID, which imapserver
// does not implement, and offers IDLE.
func TestIMAPCapabilities(t *testing.T) {
	b := startT(t)
	c, err := imapclient.DialInsecure(b.IMAPAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	caps, err := c.Capability().Wait()
	if err != nil {
		t.Fatal(err)
	}
	if caps.Has(imap.CapID) || !caps.Has(imap.CapIdle) {
		t.Fatalf("capabilities = %v, want IDLE and no ID", caps)
	}
}

func TestIMAPWrongPassword(t *testing.T) {
	b := startT(t)
	c, err := imapclient.DialInsecure(b.IMAPAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = c.Login("alice@example.test", "bobpass").Wait()
	var ie *imap.Error
	if !errors.As(err, &ie) || ie.Type != imap.StatusResponseTypeNo {
		t.Fatalf("login with wrong password = %v, want NO", err)
	}
	if err := c.Login("nobody@example.test", "x").Wait(); err == nil {
		t.Fatal("login of unknown user succeeded")
	}
}

// TestSMTPDeliversToIMAP: a message sent over SMTP to two users can be
// read back byte for byte from each INBOX.
func TestSMTPDeliversToIMAP(t *testing.T) {
	b := startT(t)
	msg := []byte("From: <alice@example.test>\r\nTo: <bob@example.test>\r\nSubject: hi \xc3\xa9\r\n\r\nbody line\r\n.leading dot\r\n")
	c, err := smtp.Dial(b.SMTPAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.SendMail("alice@example.test", []string{"bob@example.test", "Alice@Example.Test"}, bytes.NewReader(msg)); err != nil {
		t.Fatalf("send: %v", err)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"bob@example.test", "alice@example.test"} {
		msgs := inbox(t, login(t, b, u))
		if len(msgs) != 2 || !bytes.Equal(msgs[1], msg) {
			t.Fatalf("%s INBOX = %q, want welcome + %q", u, msgs, msg)
		}
	}
}

// TestSMTPUnknownRecipient: RCPT for a non-demo address is refused with a
// permanent error and nothing is stored.
func TestSMTPUnknownRecipient(t *testing.T) {
	b := startT(t)
	c, err := smtp.Dial(b.SMTPAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Mail("alice@example.test", nil); err != nil {
		t.Fatal(err)
	}
	err = c.Rcpt("mallory@example.test", nil)
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 550 {
		t.Fatalf("RCPT unknown = %v, want 550", err)
	}
	if n := len(inbox(t, login(t, b, "alice@example.test"))); n != 1 {
		t.Fatalf("alice has %d messages, want 1", n)
	}
}

// TestSMTPTooLarge: a message over the size limit is refused, not stored.
func TestSMTPTooLarge(t *testing.T) {
	const limit = 64 << 10
	b, err := start(context.Background(), testLogger(t), limit)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	c, err := smtp.Dial(b.SMTPAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	big := bytes.Repeat([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n"), limit/64+16)
	msg := append([]byte("Subject: big\r\n\r\n"), big...)
	if err := c.SendMail("alice@example.test", []string{"bob@example.test"}, bytes.NewReader(msg)); err == nil {
		t.Fatal("oversized message accepted")
	}
	if n := len(inbox(t, login(t, b, "bob@example.test"))); n != 1 {
		t.Fatalf("bob has %d messages, want 1", n)
	}
}

// TestCloseStopsListeners: Close (also via the context, even at once
// after Start, before the servers' loops have run) stops both servers,
// and a second Close is harmless.
func TestCloseStopsListeners(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	b, err := Start(ctx, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	closed := func(a string) bool {
		c, err := net.DialTimeout("tcp", a, time.Second)
		if err != nil {
			return true
		}
		c.Close()
		return false
	}
	// A bound for a hang, not a speed target.
	deadline := time.Now().Add(30 * time.Second)
	for !(closed(b.IMAPAddr) && closed(b.SMTPAddr)) {
		if time.Now().After(deadline) {
			t.Fatal("listeners still accept after the context was cancelled")
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.Close()
	b.Close()
}
