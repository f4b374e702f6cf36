//go:build integration

package integration

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/integration/acmetest"
)

// The ACME tests run Pebble (integration/acmetest) in the test process
// and the real mailgate binary against it: mailgate orders a certificate
// for acmeDomain, Pebble's VA resolves that name to 127.0.0.1 through its
// own loopback DNS and validates against mailgate's challenge listeners,
// and real clients then log in over IMAPS trusting only Pebble's root.
const (
	acmeDomain = "mail.example.test"
	acmeUser   = "alice@example.test"

	// What tlsconf logs (docs/tls.md, "Built-in ACME").
	logObtained = "acme: certificate obtained"
	logRenewed  = "acme: certificate renewed"
	logTLSDown  = "tls manager stopped"

	// acmeWait bounds one issuance or renewal as the tests wait for it.
	// With Pebble's VA delay off an order takes a second or two; an
	// http-01-only order first fails a tls-alpn-01 attempt (autocert tries
	// that first) and takes a little longer.
	acmeWait = time.Minute
)

// acmeSetup is one Pebble and one mailgate getting its certificate there.
type acmeSetup struct {
	pebble  *acmetest.Pebble
	mg      *Mailgate
	rootPEM string // file with Pebble's issuing root: all the clients trust
	roots   *x509.CertPool
	port    string // mailgate's IMAPS port on 127.0.0.1
}

// startACME starts Pebble with opts (its challenge ports picked free) and
// a mailgate whose only listener is IMAPS with a certificate from it,
// obtained through challenges (http-01, tls-alpn-01) on the ports Pebble
// validates against. renewBefore 0 keeps mailgate's default.
func startACME(t *testing.T, opts acmetest.Options, renewBefore time.Duration, challenges ...string) *acmeSetup {
	t.Helper()
	hs := need(t)
	plog := &syncBuffer{}
	opts.Dir, opts.Log = t.TempDir(), plog
	p, err := acmetest.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("pebble log:\n%s", plog.String())
		}
	})
	s := &acmeSetup{pebble: p, roots: p.Roots(), rootPEM: filepath.Join(t.TempDir(), "pebble-root.pem")}
	if err := os.WriteFile(s.rootPEM, p.RootPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	renew := ""
	if renewBefore > 0 {
		renew = "\n    renew_before: " + renewBefore.String()
	}
	cacheDir := filepath.Join(t.TempDir(), "acme")
	// The challenge ports are Pebble's (picked by acmetest with testport);
	// the IMAPS port is picked here, again when mailgate reports it taken.
	var port int
	pick := func() {
		ports, err := freePorts(1)
		if err != nil {
			t.Fatal(err)
		}
		port = ports[0]
	}
	pick()
	s.mg = launchRetrying(t, func() string {
		return fmt.Sprintf(`hostname: %s
log: {level: debug, format: text}
listeners:
  - {name: imaps, protocol: imap, address: "127.0.0.1:%d", tls: implicit}
backends:
  imap: {address: "127.0.0.1:%d", tls: none, forward_client: true}
tls:
  acme:
    domains: [%s]
    email: postmaster@example.test
    cache_dir: %q
    directory_url: %q
    directory_ca: %q
    challenges: [%s]
    http_address: "127.0.0.1:%d"
    tls_alpn_address: "127.0.0.1:%d"
    poll_interval: 250ms%s
geo:
  overrides: {"127.0.0.1/32": GB}
policy:
  allow_countries: [GB]
`, acmeDomain, port, hs.imapPort, acmeDomain, cacheDir, p.DirectoryURL, p.DirectoryCAFile,
			strings.Join(challenges, ", "), p.HTTPPort, p.TLSPort, renew)
	}, pick)
	s.port = fmt.Sprint(port)
	return s
}

// waitLog waits up to acmeWait for mailgate to log substr n times, and
// fails at once if the certificate manager stopped.
func (s *acmeSetup) waitLog(t *testing.T, substr string, n int) {
	t.Helper()
	ok := waitFor(func() bool {
		log := s.mg.Log()
		return strings.Count(log, substr) >= n || strings.Contains(log, logTLSDown)
	}, acmeWait)
	if log := s.mg.Log(); !ok || strings.Contains(log, logTLSDown) {
		t.Fatalf("waiting for %q (%d times): not logged within %s or the certificate manager stopped", substr, n, acmeWait)
	}
}

// handshake connects to mailgate's IMAPS port as a client verifying
// acmeDomain against Pebble's root, and returns the session.
func (s *acmeSetup) handshake(t *testing.T) (*tls.Conn, error) {
	t.Helper()
	c, err := tls.Dial("tcp", "127.0.0.1:"+s.port, &tls.Config{ServerName: acmeDomain, RootCAs: s.roots})
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

// imaplibLogin is a real IMAP client: Python's imaplib connects to
// 127.0.0.1, sends acmeDomain as SNI, verifies the certificate for that
// name against the CA file only (no system roots), logs in, sends NOOP
// and logs out. It prints "OK <serial hex> <notAfter>" or, when the
// certificate does not verify, "CERTIFICATE_VERIFY_FAILED <reason>" and
// exits 3.
const imaplibLogin = `
import imaplib, socket, ssl, sys
cafile, name, port, user, password = sys.argv[1:6]

class LoopbackIMAP4SSL(imaplib.IMAP4_SSL):
    # The name resolves nowhere outside the test: connect to loopback,
    # still verify the certificate for the name.
    def _create_socket(self, timeout):
        sock = socket.create_connection(("127.0.0.1", self.port), timeout)
        return self.ssl_context.wrap_socket(sock, server_hostname=self.host)

ctx = ssl.create_default_context(cafile=cafile)
try:
    c = LoopbackIMAP4SSL(host=name, port=int(port), ssl_context=ctx, timeout=20)
except ssl.SSLCertVerificationError as e:
    print("CERTIFICATE_VERIFY_FAILED", e.verify_message)
    sys.exit(3)
cert = c.sock.getpeercert()
typ, _ = c.login(user, password)
assert typ == "OK", typ
typ, _ = c.noop()
assert typ == "OK", typ
c.logout()
print("OK", cert["serialNumber"].lower().lstrip("0"), cert["notAfter"])
`

// imaplib runs imaplibLogin as acmeUser and returns its output line.
func (s *acmeSetup) imaplib(t *testing.T) (string, error) {
	t.Helper()
	out, err := python(t, imaplibLogin, s.rootPEM, acmeDomain, s.port, acmeUser, users[acmeUser])
	return strings.TrimSpace(out), err
}

// checkFallbackRefused: before the certificate is issued (Pebble holds
// mailgate's order) mailgate serves its self-signed fallback for the
// domain, which a client trusting Pebble's root refuses.
func (s *acmeSetup) checkFallbackRefused(t *testing.T) {
	t.Helper()
	c, err := tls.Dial("tcp", "127.0.0.1:"+s.port, &tls.Config{ServerName: acmeDomain, InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("handshake before issuance: %v", err)
	}
	leaf := c.ConnectionState().PeerCertificates[0]
	c.Close()
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: s.roots, DNSName: acmeDomain}); err == nil {
		t.Fatalf("before issuance: the certificate served verifies against Pebble's root")
	}
	if leaf.VerifyHostname(acmeDomain) != nil || leaf.Issuer.String() != leaf.Subject.String() {
		t.Errorf("before issuance: certificate for %v issued by %q; want the self-signed fallback for %s", leaf.DNSNames, leaf.Issuer, acmeDomain)
	}
	if out, err := s.imaplib(t); err == nil || !strings.HasPrefix(out, "CERTIFICATE_VERIFY_FAILED") {
		t.Errorf("imaplib against the fallback = %q, %v; want CERTIFICATE_VERIFY_FAILED", out, err)
	}
	if strings.Contains(s.mg.Log(), logObtained) {
		t.Errorf("mailgate logged %q while Pebble held every request", logObtained)
	}
}

// checkLogin logs in with imaplib and returns the serial it was shown.
func (s *acmeSetup) checkLogin(t *testing.T) string {
	t.Helper()
	out, err := s.imaplib(t)
	f := strings.Fields(out)
	if err != nil || len(f) < 2 || f[0] != "OK" {
		t.Fatalf("imaplib IMAPS login verifying against Pebble's root = %q, %v; want OK", out, err)
	}
	return f[1]
}

// TestACMEIssuance: mailgate obtains its IMAPS certificate from Pebble
// through one challenge type, with the other's port closed, and real
// clients log in to Dovecot through it verifying against Pebble's root.
func TestACMEIssuance(t *testing.T) {
	for _, challenge := range []string{"http-01", "tls-alpn-01"} {
		t.Run(challenge, func(t *testing.T) {
			s := startACME(t, acmetest.Options{Held: true}, 0, challenge)
			s.checkFallbackRefused(t)
			s.pebble.Release()
			s.waitLog(t, logObtained, 1)
			log := s.mg.Log()
			if !strings.Contains(log, "serving ACME "+challenge+" challenges") {
				t.Errorf("mailgate did not log serving %s challenges", challenge)
			}
			for _, other := range []string{"http-01", "tls-alpn-01"} {
				if other != challenge && strings.Contains(log, "serving ACME "+other+" challenges") {
					t.Errorf("mailgate serves %s, which the config leaves out", other)
				}
			}

			c, err := s.handshake(t)
			if err != nil {
				t.Fatalf("handshake verifying against Pebble's root after %q: %v", logObtained, err)
			}
			leaf := c.ConnectionState().PeerCertificates[0]
			if life := leaf.NotAfter.Sub(leaf.NotBefore); life < acmetest.DefaultValidity-time.Minute || life > acmetest.DefaultValidity {
				t.Errorf("certificate lives %s, want Pebble's %s", life, acmetest.DefaultValidity)
			}
			if !hasLine(log, logObtained, "serial="+leaf.SerialNumber.Text(16)) {
				t.Errorf("no %q line names serial %s", logObtained, leaf.SerialNumber.Text(16))
			}

			if got, want := s.checkLogin(t), leaf.SerialNumber.Text(16); got != want {
				t.Errorf("imaplib saw serial %s, Go's handshake %s", got, want)
			}
			// curl too: --resolve sends the name as SNI to 127.0.0.1 and
			// verifies against the root only.
			out, err := runTool(t, "curl", "-sS", "--max-time", "30", "--cacert", s.rootPEM,
				"--resolve", acmeDomain+":"+s.port+":127.0.0.1",
				"imaps://"+acmeDomain+":"+s.port+"/", "-u", acmeUser+":"+users[acmeUser])
			if err != nil || !strings.Contains(out, "INBOX") {
				t.Errorf("curl IMAPS listing verifying against Pebble's root = %q, %v; want INBOX", out, err)
			}
		})
	}
}

// TestACMERenewal: Pebble issues certificates living 30 s and mailgate
// renews 20 s before expiry, so it renews about 10 s after issuance.
// After the renewal, new handshakes get the new certificate (another
// serial, later expiry), imaplib logs in over it, and a session logged in
// before the renewal keeps working.
func TestACMERenewal(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a short-lived certificate to be renewed")
	}
	const validity, renewBefore = 30 * time.Second, 20 * time.Second
	s := startACME(t, acmetest.Options{Validity: validity}, renewBefore, "http-01", "tls-alpn-01")
	s.waitLog(t, logObtained, 1)

	// A session from before the renewal: logged in and spliced to
	// Dovecot.
	c, err := s.handshake(t)
	if err != nil {
		t.Fatalf("handshake verifying against Pebble's root: %v", err)
	}
	first := c.ConnectionState().PeerCertificates[0]
	if life := first.NotAfter.Sub(first.NotBefore); life > validity {
		t.Fatalf("certificate lives %s, want at most %s", life, validity)
	}
	l := newLineConn(t, c)
	if g := l.line(); !strings.HasPrefix(g, "* OK") {
		t.Fatalf("greeting = %q", g)
	}
	l.send("a1 LOGIN " + imapQuote(acmeUser) + " " + imapQuote(users[acmeUser]) + "\r\n")
	if r := l.until("a1 "); !strings.HasPrefix(r, "a1 OK") {
		t.Fatalf("LOGIN = %q, want a1 OK", r)
	}

	s.waitLog(t, logRenewed, 1)
	c2, err := s.handshake(t)
	if err != nil {
		t.Fatalf("handshake after %q: %v", logRenewed, err)
	}
	renewed := c2.ConnectionState().PeerCertificates[0]
	if renewed.SerialNumber.Cmp(first.SerialNumber) == 0 || !renewed.NotAfter.After(first.NotAfter) {
		t.Fatalf("after renewal: serial %s expiring %s; want a new serial expiring after %s (serial %s)",
			renewed.SerialNumber.Text(16), renewed.NotAfter, first.NotAfter, first.SerialNumber.Text(16))
	}
	if !hasLine(s.mg.Log(), logRenewed, "old_serial="+first.SerialNumber.Text(16)) {
		t.Errorf("no %q line names old serial %s", logRenewed, first.SerialNumber.Text(16))
	}
	got := s.checkLogin(t)
	if n, ok := new(big.Int).SetString(got, 16); !ok || n.Cmp(first.SerialNumber) == 0 {
		t.Errorf("imaplib after renewal saw serial %s, want a renewed one (first was %s)", got, first.SerialNumber.Text(16))
	}

	// The old session still talks to Dovecot through mailgate.
	l.c.SetDeadline(time.Now().Add(30 * time.Second))
	l.send("a2 NOOP\r\n")
	if r := l.until("a2 "); !strings.HasPrefix(r, "a2 OK") {
		t.Fatalf("NOOP on the session from before the renewal = %q, want a2 OK", r)
	}
	l.send("a3 SELECT INBOX\r\n")
	if r := l.until("a3 "); !strings.HasPrefix(r, "a3 OK") {
		t.Fatalf("SELECT on the session from before the renewal = %q, want a3 OK", r)
	}
	l.send("a4 LOGOUT\r\n")
	l.until("a4 ")
}
