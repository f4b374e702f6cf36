package backend

import (
	"bytes"
	"encoding/base64"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// lockedBuffer is a log sink shared by server-side goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestTranscriptRedacted logs every login path at LevelTrace and checks
// the transcript shows the dialogue but never the password, in clear or
// inside a SASL message.
func TestTranscriptRedacted(t *testing.T) {
	const user, pass = "alice@example.test", "Sup3r-s3cret ü"
	long := pass + strings.Repeat("x", 300) // forces POP3's AUTH continuation
	var logs lockedBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: LevelTrace}))
	withLog := func(o Options) Options { o.Logger = log; return o }

	for _, caps := range []string{fakeCaps, "IMAP4rev1"} { // SASL-IR; LOGIN with a sync literal
		_, b := startIMAP(t, &imapFake{caps: caps})
		b.Opts = withLog(b.Opts)
		sess, err := b.Login(withTimeout(t), testClient, "a1", user, pass)
		if err != nil {
			t.Fatal(err)
		}
		sess.Conn.Close()
	}
	for _, f := range []*pop3Fake{{}, {capa: []string{"USER"}}} {
		_, b := startPOP3(t, f)
		b.Opts = withLog(b.Opts)
		for _, p := range []string{pass, long} {
			sess, err := b.Login(withTimeout(t), testClient, user, p)
			if err != nil {
				t.Fatal(err)
			}
			sess.Conn.Close()
		}
	}
	for _, mode := range []string{VerifySMTPAuth, VerifyIMAP} {
		_, b, _ := startSMTP(t, &smtpFake{}, mode)
		b.Opts = withLog(b.Opts)
		if b.VerifyIMAP != nil {
			b.VerifyIMAP.Opts = withLog(b.VerifyIMAP.Opts)
		}
		sess, err := b.Login(withTimeout(t), testClient, user, pass)
		if err != nil {
			t.Fatal(err)
		}
		sess.Conn.Close()
	}

	out := logs.String()
	for _, want := range []string{"EHLO mailgate.test", "AUTH PLAIN <redacted>", "PASS <redacted>", " login <redacted>", "+OK Logged in."} {
		if !strings.Contains(out, want) {
			t.Errorf("transcript lacks %q", want)
		}
	}
	secrets := []string{"s3cret", base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))}
	for _, p := range []string{pass, long} {
		secrets = append(secrets, saslPlain(user, p))
	}
	for _, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("transcript contains secret %q", s)
		}
	}
}
