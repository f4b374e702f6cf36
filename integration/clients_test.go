//go:build integration

package integration

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// python runs a Python 3 script with args and returns its stdout; a
// non-zero exit fails the test unless wantErr, in which case stdout and
// stderr come back together.
func python(t testing.TB, script string, args ...string) (string, error) {
	t.Helper()
	if _, err := exec.LookPath("python3"); err != nil {
		if inCI() {
			t.Fatal("python3 not installed")
		}
		t.Skip("python3 not installed")
	}
	return runTool(t, "python3", append([]string{"-c", script}, args...)...)
}

// runTool runs a client program with a bound; a missing program skips the
// test (fails in CI).
func runTool(t testing.TB, name string, args ...string) (string, error) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		if inCI() {
			t.Fatalf("%s not installed", name)
		}
		t.Skipf("%s not installed", name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var out, errb strings.Builder
	cmd.Stdout = &out
	cmd.Stderr = &errb
	err := cmd.Run()
	if err != nil {
		return out.String() + errb.String(), fmt.Errorf("%s: %w: %s", name, err, errb.String())
	}
	return out.String(), nil
}

// doveadm runs doveadm against the harness's Dovecot.
func doveadm(t testing.TB, args ...string) string {
	t.Helper()
	hs := need(t)
	path, err := lookPath("doveadm")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(path, append([]string{"-c", hs.dovecotConf()}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("doveadm %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// resetMailbox empties user's INBOX so a test starts from a known state.
func resetMailbox(t testing.TB, user string) {
	t.Helper()
	doveadm(t, "expunge", "-u", user, "mailbox", "INBOX", "all")
}

// imapDial logs in to an IMAP server: over TLS (self-signed) when tlsOn,
// else plain (used for Dovecot directly).
func imapDial(t testing.TB, address string, tlsOn bool, user, pass string, opts *imapclient.Options) *imapclient.Client {
	t.Helper()
	if opts == nil {
		opts = &imapclient.Options{}
	}
	var c *imapclient.Client
	var err error
	if tlsOn {
		opts.TLSConfig = &tls.Config{InsecureSkipVerify: true}
		c, err = imapclient.DialTLS(address, opts)
	} else {
		c, err = imapclient.DialInsecure(address, opts)
	}
	if err != nil {
		t.Fatalf("imap dial %s: %v", address, err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Login(user, pass).Wait(); err != nil {
		t.Fatalf("imap login %s at %s: %v", user, address, err)
	}
	return c
}

// appendDirect stores msg in user's INBOX straight through Dovecot.
func appendDirect(t testing.TB, user string, msg []byte) {
	t.Helper()
	hs := need(t)
	c := imapDial(t, addr(hs.imapPort), false, user, users[user], nil)
	cmd := c.Append("INBOX", int64(len(msg)), nil)
	if _, err := cmd.Write(msg); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := cmd.Wait(); err != nil {
		t.Fatalf("append: %v", err)
	}
	if err := c.Logout().Wait(); err != nil {
		t.Fatal(err)
	}
}

// fetchAll returns the full raw bytes of every message in INBOX.
func fetchAll(t testing.TB, c *imapclient.Client) [][]byte {
	t.Helper()
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatalf("select: %v", err)
	}
	if sel.NumMessages == 0 {
		return nil
	}
	var seq imap.SeqSet
	seq.AddRange(1, sel.NumMessages)
	msgs, err := c.Fetch(seq, &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{Peek: true}}}).Collect()
	if err != nil {
		t.Fatalf("fetch: %v", err)
	}
	var out [][]byte
	for _, m := range msgs {
		for _, b := range m.BodySection {
			out = append(out, b.Bytes)
		}
	}
	return out
}

// countDirect returns the number of messages in user's INBOX via Dovecot.
func countDirect(t testing.TB, user string) uint32 {
	t.Helper()
	hs := need(t)
	c := imapDial(t, addr(hs.imapPort), false, user, users[user], nil)
	defer c.Logout()
	st, err := c.Status("INBOX", &imap.StatusOptions{NumMessages: true}).Wait()
	if err != nil {
		t.Fatal(err)
	}
	return *st.NumMessages
}

// lineConn is a raw text-protocol client for exact-bytes checks.
type lineConn struct {
	t testing.TB
	c net.Conn
	r *bufio.Reader
}

func newLineConn(t testing.TB, c net.Conn) *lineConn {
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return &lineConn{t: t, c: c, r: bufio.NewReader(c)}
}

// tlsClient wraps c in client TLS trusting any certificate (the test
// listener uses a self-signed one).
func (l *lineConn) startTLS() {
	l.t.Helper()
	if l.r.Buffered() != 0 {
		l.t.Fatalf("server sent %d bytes before the TLS handshake", l.r.Buffered())
	}
	tc := tls.Client(l.c, &tls.Config{InsecureSkipVerify: true, ServerName: "mail.example.test"})
	if err := tc.Handshake(); err != nil {
		l.t.Fatalf("tls handshake: %v", err)
	}
	l.c = tc
	l.r = bufio.NewReader(tc)
}

func (l *lineConn) send(s string) {
	l.t.Helper()
	if _, err := io.WriteString(l.c, s); err != nil {
		l.t.Fatalf("write %q: %v", s, err)
	}
}

func (l *lineConn) line() string {
	l.t.Helper()
	s, err := l.r.ReadString('\n')
	if err != nil {
		l.t.Fatalf("read: %v (got %q)", err, s)
	}
	return s
}

// until reads lines until one starts with prefix and returns it.
func (l *lineConn) until(prefix string) string {
	l.t.Helper()
	for {
		s := l.line()
		if strings.HasPrefix(s, prefix) {
			return s
		}
	}
}

// smtpReply reads one possibly multi-line SMTP reply and returns its lines.
func (l *lineConn) smtpReply() []string {
	l.t.Helper()
	var lines []string
	for {
		s := l.line()
		lines = append(lines, s)
		if len(s) < 4 || s[3] != '-' {
			return lines
		}
	}
}

// makeMessage builds an RFC 5322 message of about size bytes with CRLF
// lines and a unique subject.
func makeMessage(from, to, subject string, size int) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\nMessage-ID: <%s@example.test>\r\nDate: %s\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n",
		from, to, subject, strings.ReplaceAll(subject, " ", "."), time.Now().Format(time.RFC1123Z))
	const line = "The quick brown fox jumps over the lazy dog 0123456789 ABCDEFGHIJ.\r\n"
	for i := 0; b.Len() < size; i++ {
		fmt.Fprintf(&b, "%08d ", i)
		b.WriteString(line)
	}
	return []byte(b.String())
}

func itoa(n int) string { return fmt.Sprint(n) }

// writeTemp writes b to a file in the test's temp dir and returns its path.
func writeTemp(t testing.TB, b []byte) string {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "msg")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return f.Name()
}

// splitPort returns host and port of a host:port address.
func splitPort(t testing.TB, a string) (string, string) {
	t.Helper()
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		t.Fatal(err)
	}
	return host, port
}

// testCertificate makes a self-signed ECDSA certificate for host and
// returns it and its key as PEM, plus a pool that trusts it.
func testCertificate(t testing.TB, host string) (certPEM, keyPEM []byte, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: host},
		DNSNames:              []string{host},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), pool
}
