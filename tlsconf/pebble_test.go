package tlsconf

// End-to-end ACME tests against Pebble, Let's Encrypt's test CA, run
// in-process on loopback by integration/acmetest: its own CA, its WFE over
// HTTPS, its VA resolving every name to 127.0.0.1 and validating against
// our challenge listeners. integration/acme_test.go runs the same against
// the real mailgate binary.

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/integration/acmetest"
	"github.com/mailgate/mailgate/internal/testwait"
)

// pebbleEnv is a running Pebble (integration/acmetest) and its root.
type pebbleEnv struct {
	*acmetest.Pebble
	roots   *x509.CertPool // Pebble's issuing root
	rootPEM []byte         // the same, PEM
}

// startPebble starts Pebble issuing certificates valid for validity, with
// its log in the test's, and stops it at cleanup.
func startPebble(t *testing.T, validity time.Duration) *pebbleEnv {
	t.Helper()
	p, err := acmetest.Start(acmetest.Options{Validity: validity, Dir: t.TempDir(), Log: tWriter{t}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return &pebbleEnv{Pebble: p, roots: p.Roots(), rootPEM: p.RootPEM()}
}

// acmeConfig is a config obtaining domain from env with challenge.
func (env *pebbleEnv) acmeConfig(t *testing.T, domain string, challenges ...string) Config {
	return Config{ACME: &ACME{
		Domains:        []string{domain},
		Email:          "postmaster@example.com",
		CacheDir:       filepath.Join(t.TempDir(), "acme"),
		DirectoryURL:   env.DirectoryURL,
		DirectoryCA:    env.DirectoryCAFile,
		Challenges:     challenges,
		HTTPAddress:    fmt.Sprintf("127.0.0.1:%d", env.HTTPPort),
		TLSALPNAddress: fmt.Sprintf("127.0.0.1:%d", env.TLSPort),
		PollInterval:   100 * time.Millisecond,
	}}
}

// runManager starts m.Run and stops it at cleanup.
func runManager(t *testing.T, m *Manager) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v", err)
		}
	})
}

// waitIssued waits until an IMAPS handshake for domain verifies against
// Pebble's root, and returns that session.
func waitIssued(t *testing.T, addr, domain string, roots *x509.CertPool) *tls.Conn {
	t.Helper()
	var conn *tls.Conn
	testwait.For(t, "a certificate from Pebble", func() bool {
		c, err := dialTLS(t, addr, &tls.Config{ServerName: domain, RootCAs: roots, NextProtos: []string{"imap"}})
		if err != nil {
			return false // the fallback is served meanwhile; it does not verify
		}
		conn = c
		return true
	})
	if got := conn.ConnectionState().NegotiatedProtocol; got != "imap" {
		t.Errorf("ALPN = %q, want imap", got)
	}
	return conn
}

func TestACMEPebble(t *testing.T) {
	env := startPebble(t, 24*time.Hour)
	for _, tt := range []struct {
		challenge, domain string
	}{
		{ChallengeHTTP01, "http01.mail.example.com"},
		{ChallengeTLSALPN01, "alpn.mail.example.com"},
	} {
		t.Run(tt.challenge, func(t *testing.T) {
			m, err := New(env.acmeConfig(t, tt.domain, tt.challenge), testLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			addr := serveEcho(t, m.ServerConfig("imap"))
			// Before Run nothing is issued: the fallback is served at once
			// and does not verify.
			if _, err := dialTLS(t, addr, &tls.Config{ServerName: tt.domain, RootCAs: env.roots}); err == nil {
				t.Fatal("handshake verified against Pebble before any order")
			}
			runManager(t, m)
			c := waitIssued(t, addr, tt.domain, env.roots)
			echo(t, c, "a1 LOGIN")
			if exp, ok := m.Expiry()[tt.domain]; !ok || time.Until(exp) < 23*time.Hour {
				t.Errorf("Expiry()[%s] = %v, %v; want about 24h ahead", tt.domain, exp, ok)
			}
			// A real IMAP client (Python's imaplib) logs in over IMAPS,
			// verifying the certificate against Pebble's root only.
			imaps := serveFakeIMAP(t, m.ServerConfig("imap"), "alice", "s3cret")
			out, err := imapsLogin(t, env.rootPEM, tt.domain, imaps)
			t.Logf("imaplib: %s", out)
			if err != nil || !strings.HasPrefix(out, "OK") {
				t.Errorf("imaplib IMAPS login = %q, %v; want OK", out, err)
			}
			// ...and refuses the self-signed fallback of a fresh manager.
			fresh, err := New(env.acmeConfig(t, tt.domain, tt.challenge), testLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			if out, err := imapsLogin(t, env.rootPEM, tt.domain, serveFakeIMAP(t, fresh.ServerConfig("imap"), "alice", "s3cret")); err == nil || !strings.Contains(out, "CERTIFICATE_VERIFY_FAILED") {
				t.Errorf("imaplib with the fallback certificate = %q, %v; want a verification failure", out, err)
			}
			// The challenge ports serve challenges only.
			switch tt.challenge {
			case ChallengeHTTP01:
				resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", env.HTTPPort))
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusNotFound {
					t.Errorf("GET / on the http-01 port = %s, want 404", resp.Status)
				}
			case ChallengeTLSALPN01:
				_, err := dialTLS(t, fmt.Sprintf("127.0.0.1:%d", env.TLSPort), &tls.Config{
					ServerName: tt.domain, InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
				if err == nil {
					t.Error("ordinary handshake on the tls-alpn-01 port succeeded")
				}
			}
			// A non-allowlisted name never starts an order, and like a
			// client without SNI it gets the issued certificate.
			for _, sni := range []string{"evil.example.com", ""} {
				c2, err := dialTLS(t, addr, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
				if err != nil {
					t.Fatal(err)
				}
				got := c2.ConnectionState().PeerCertificates
				if _, err := got[0].Verify(x509.VerifyOptions{Roots: env.roots, Intermediates: pool(got[1:]), DNSName: tt.domain}); err != nil {
					t.Errorf("SNI %q: got %v, not the issued certificate: %v", sni, got[0].DNSNames, err)
				}
			}
		})
	}
}

// TestACMERenewal: with certificates living 20s and renew_before 15s,
// autocert renews a few seconds after issuance; new handshakes get the new
// serial while the session opened before keeps working.
func TestACMERenewal(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a short-lived certificate to be renewed")
	}
	env := startPebble(t, 20*time.Second)
	const domain = "renew.mail.example.com"
	cfg := env.acmeConfig(t, domain, ChallengeHTTP01, ChallengeTLSALPN01)
	cfg.ACME.RenewBefore = 15 * time.Second
	m, err := New(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	addr := serveEcho(t, m.ServerConfig("imap"))
	runManager(t, m)
	first := waitIssued(t, addr, domain, env.roots)
	serial := first.ConnectionState().PeerCertificates[0].SerialNumber
	testwait.For(t, "a renewed certificate", func() bool {
		c, err := dialTLS(t, addr, &tls.Config{ServerName: domain, RootCAs: env.roots})
		return err == nil && c.ConnectionState().PeerCertificates[0].SerialNumber.Cmp(serial) != 0
	})
	echo(t, first, "a2 NOOP on the session from before the renewal")
	if exp := m.Expiry()[domain]; !exp.After(first.ConnectionState().PeerCertificates[0].NotAfter.Add(-time.Second)) {
		t.Errorf("Expiry() = %v, not later than the first certificate's", exp)
	}
}

func pool(certs []*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

// serveFakeIMAP is the smallest IMAP server imaplib will log in to: the
// greeting, CAPABILITY, LOGIN of one fixed user, LOGOUT. It stands in for
// mailgate's proxy until cmd wires tlsconf to it.
func serveFakeIMAP(t *testing.T, cfg *tls.Config, user, pass string) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(30 * time.Second))
				r := bufio.NewReader(c)
				fmt.Fprintf(c, "* OK [CAPABILITY IMAP4rev1] fake ready\r\n")
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					f := strings.Fields(line)
					if len(f) < 2 {
						return
					}
					tag, cmd := f[0], strings.ToUpper(f[1])
					switch {
					case cmd == "CAPABILITY":
						fmt.Fprintf(c, "* CAPABILITY IMAP4rev1\r\n%s OK done\r\n", tag)
					case cmd == "LOGIN" && len(f) == 4 && strings.Trim(f[2], `"`) == user && strings.Trim(f[3], `"`) == pass:
						fmt.Fprintf(c, "%s OK LOGIN completed\r\n", tag)
					case cmd == "LOGIN":
						fmt.Fprintf(c, "%s NO [AUTHENTICATIONFAILED] Authentication failed.\r\n", tag)
					case cmd == "LOGOUT":
						fmt.Fprintf(c, "* BYE\r\n%s OK done\r\n", tag)
						return
					default:
						fmt.Fprintf(c, "%s BAD unknown\r\n", tag)
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// imapsLogin logs in with Python's imaplib, a real IMAP client, trusting
// only rootPEM for name.
func imapsLogin(t *testing.T, rootPEM []byte, name, addr string) (string, error) {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("python3 is required in CI")
		}
		t.Skip("python3 not installed; skipping the real-client IMAPS login")
	}
	caFile := filepath.Join(t.TempDir(), "root.pem")
	writeFile(t, caFile, rootPEM)
	_, port, _ := net.SplitHostPort(addr)
	out, err := exec.Command(py, "testdata/imaps_login.py", caFile, name, port, "alice", "s3cret").CombinedOutput()
	return strings.TrimSpace(string(out)), err
}
