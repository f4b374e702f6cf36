package tlsconf

// End-to-end ACME tests against Pebble, Let's Encrypt's test CA, run
// in-process on loopback: its own CA, its WFE over HTTPS, its VA resolving
// every name to 127.0.0.1 through a loopback DNS server of the test's, and
// validating against our challenge listeners.

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
	"github.com/miekg/dns"
)

// pebbleEnv is a running Pebble.
type pebbleEnv struct {
	dirURL   string         // ACME directory
	dirCA    string         // PEM file trusting the WFE's HTTPS
	roots    *x509.CertPool // Pebble's issuing root, from /roots/0
	rootPEM  []byte         // the same, PEM
	httpPort int            // where Pebble's VA sends http-01 requests
	tlsPort  int            // where it sends tls-alpn-01 handshakes
}

// startLoopbackDNS answers every A query with 127.0.0.1 and everything
// else (AAAA, CAA) with an empty answer, so Pebble's VA validates against
// our loopback listeners. It serves TCP (which Pebble's VA uses) and UDP
// on one port; the sockets are bound before it returns, so the VA never
// races its start-up.
func startLoopbackDNS(t *testing.T) string {
	t.Helper()
	answer := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		r := new(dns.Msg)
		r.SetReply(q)
		for _, qq := range q.Question {
			if qq.Qtype == dns.TypeA {
				r.Answer = append(r.Answer, &dns.A{
					Hdr: dns.RR_Header{Name: qq.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
					A:   net.IPv4(127, 0, 0, 1),
				})
			}
		}
		w.WriteMsg(r)
	})
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		pc, err := net.ListenPacket("udp", ln.Addr().String())
		if err != nil {
			ln.Close() // UDP port taken: try another number
			continue
		}
		for _, srv := range []*dns.Server{{Listener: ln, Handler: answer}, {PacketConn: pc, Handler: answer}} {
			go srv.ActivateAndServe()
			t.Cleanup(func() { srv.Shutdown() })
		}
		return ln.Addr().String()
	}
	t.Fatal("no loopback port free for both TCP and UDP")
	return ""
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startPebble starts Pebble issuing certificates valid for validity.
func startPebble(t *testing.T, validity time.Duration) *pebbleEnv {
	t.Helper()
	// Pebble reads these when its parts are built: no artificial
	// validation delay, no nonce rejection chaos.
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")
	t.Setenv("PEBBLE_WFE_NONCEREJECT", "0")
	plog := log.New(tWriter{t}, "pebble ", 0)

	dnsAddr := startLoopbackDNS(t)

	env := &pebbleEnv{httpPort: freePort(t), tlsPort: freePort(t)}
	store := db.NewMemoryStore()
	authority := ca.New(plog, store, "", "ecdsa", 0, 1, map[string]ca.Profile{
		"default": {Description: "test", ValidityPeriod: uint64(validity / time.Second)},
	})
	validator := va.New(plog, env.httpPort, env.tlsPort, false, dnsAddr, store)
	front := wfe.New(plog, store, validator, authority, []string{"pebble.letsencrypt.org"}, false, false, 0, 0)

	api := httptest.NewUnstartedServer(front.Handler())
	api.StartTLS()
	t.Cleanup(api.Close)
	mgmt := httptest.NewUnstartedServer(front.ManagementHandler())
	mgmt.StartTLS()
	t.Cleanup(mgmt.Close)

	env.dirURL = api.URL + wfe.DirectoryPath
	env.dirCA = filepath.Join(t.TempDir(), "pebble-wfe.pem")
	writeFile(t, env.dirCA, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: api.Certificate().Raw}))

	resp, err := mgmt.Client().Get(mgmt.URL + wfe.RootCertPath + "0")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rootPEM, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("fetching Pebble's root: %v %s", err, resp.Status)
	}
	env.rootPEM = rootPEM
	env.roots = x509.NewCertPool()
	if !env.roots.AppendCertsFromPEM(rootPEM) {
		t.Fatalf("Pebble's /roots/0 is not PEM: %q", rootPEM)
	}
	return env
}

// acmeConfig is a config obtaining domain from env with challenge.
func (env *pebbleEnv) acmeConfig(t *testing.T, domain string, challenges ...string) Config {
	return Config{ACME: &ACME{
		Domains:        []string{domain},
		Email:          "postmaster@example.com",
		CacheDir:       filepath.Join(t.TempDir(), "acme"),
		DirectoryURL:   env.dirURL,
		DirectoryCA:    env.dirCA,
		Challenges:     challenges,
		HTTPAddress:    fmt.Sprintf("127.0.0.1:%d", env.httpPort),
		TLSALPNAddress: fmt.Sprintf("127.0.0.1:%d", env.tlsPort),
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
	waitFor(t, "a certificate from Pebble", func() bool {
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
				resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", env.httpPort))
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusNotFound {
					t.Errorf("GET / on the http-01 port = %s, want 404", resp.Status)
				}
			case ChallengeTLSALPN01:
				_, err := dialTLS(t, fmt.Sprintf("127.0.0.1:%d", env.tlsPort), &tls.Config{
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
	waitFor(t, "a renewed certificate", func() bool {
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
