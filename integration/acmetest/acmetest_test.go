package acmetest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/crypto/acme"
)

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func start(t *testing.T, opts Options) *Pebble {
	t.Helper()
	if opts.Log == nil {
		opts.Log = tWriter{t}
	}
	p, err := Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p
}

// directoryClient trusts only the CA in DirectoryCAFile, as an ACME
// client configured with it would.
func directoryClient(t *testing.T, p *Pebble) *http.Client {
	t.Helper()
	pemData, err := os.ReadFile(p.DirectoryCAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemData) {
		t.Fatalf("DirectoryCAFile holds no PEM certificate: %q", pemData)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func TestStartRejectsBadOptions(t *testing.T) {
	for _, o := range []Options{
		{Validity: 500 * time.Millisecond},
		{Validity: -time.Hour},
		{HTTPPort: -1},
		{TLSPort: 70000},
	} {
		p, err := Start(o)
		if !errors.Is(err, ErrOptions) || p != nil {
			t.Errorf("Start(%+v) = %v, %v; want nil, ErrOptions", o, p, err)
		}
	}
}

// TestDirectoryDNSAndStop: the directory answers over HTTPS verified with
// DirectoryCAFile; the DNS server maps every name to 127.0.0.1; after
// Stop nothing answers and the directory Start made is gone.
func TestDirectoryDNSAndStop(t *testing.T) {
	p := start(t, Options{})
	if p.HTTPPort == 0 || p.TLSPort == 0 || p.HTTPPort == p.TLSPort {
		t.Errorf("challenge ports = %d, %d; want two distinct picked ports", p.HTTPPort, p.TLSPort)
	}
	if !strings.HasPrefix(p.DirectoryURL, "https://127.0.0.1:") {
		t.Errorf("DirectoryURL = %q, want https on 127.0.0.1", p.DirectoryURL)
	}
	resp, err := directoryClient(t, p).Get(p.DirectoryURL)
	if err != nil {
		t.Fatalf("GET directory trusting DirectoryCAFile: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"newOrder"`) {
		t.Fatalf("directory = %s %q, want 200 with newOrder", resp.Status, body)
	}

	for _, network := range []string{"tcp", "udp"} {
		c := &dns.Client{Net: network, Timeout: 5 * time.Second}
		q := new(dns.Msg).SetQuestion("mail.example.test.", dns.TypeA)
		r, _, err := c.Exchange(q, p.DNSAddr)
		if err != nil {
			t.Fatalf("DNS over %s: %v", network, err)
		}
		if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "127.0.0.1" {
			t.Errorf("A over %s = %v, want 127.0.0.1", network, r.Answer)
		}
		q = new(dns.Msg).SetQuestion("mail.example.test.", dns.TypeAAAA)
		if r, _, err = c.Exchange(q, p.DNSAddr); err != nil || len(r.Answer) != 0 {
			t.Errorf("AAAA over %s = %v, %v; want an empty answer", network, r, err)
		}
	}

	dir := filepath.Dir(p.DirectoryCAFile)
	p.Stop()
	p.Stop() // twice is fine
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after Stop, %s: %v; want it removed", dir, err)
	}
	for _, a := range []string{strings.TrimPrefix(strings.TrimSuffix(p.DirectoryURL, "/dir"), "https://"), p.DNSAddr} {
		if c, err := net.DialTimeout("tcp", a, time.Second); err == nil {
			c.Close()
			t.Errorf("after Stop, %s still accepts", a)
		}
	}
}

// TestIssueHTTP01: a plain ACME client obtains a certificate, answering
// the http-01 challenge on HTTPPort; the chain verifies against RootPEM
// for the name, and the certificate lives Validity.
func TestIssueHTTP01(t *testing.T) {
	const validity = 90 * time.Second
	const name = "mail.example.test"
	p := start(t, Options{Validity: validity, Dir: t.TempDir()})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	accountKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	client := &acme.Client{Key: accountKey, DirectoryURL: p.DirectoryURL, HTTPClient: directoryClient(t, p)}
	if _, err := client.Register(ctx, &acme.Account{}, acme.AcceptTOS); err != nil {
		t.Fatalf("register: %v", err)
	}
	order, err := client.AuthorizeOrder(ctx, acme.DomainIDs(name))
	if err != nil {
		t.Fatal(err)
	}

	// The challenge answers, on the port the VA was told about.
	answers := http.NewServeMux()
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p.HTTPPort))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: answers, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	for _, u := range order.AuthzURLs {
		z, err := client.GetAuthorization(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		var chal *acme.Challenge
		for _, c := range z.Challenges {
			if c.Type == "http-01" {
				chal = c
			}
		}
		if chal == nil {
			t.Fatalf("authorization offers no http-01: %+v", z.Challenges)
		}
		resp, err := client.HTTP01ChallengeResponse(chal.Token)
		if err != nil {
			t.Fatal(err)
		}
		answers.HandleFunc(client.HTTP01ChallengePath(chal.Token), func(w http.ResponseWriter, _ *http.Request) {
			io.WriteString(w, resp)
		})
		if _, err := client.Accept(ctx, chal); err != nil {
			t.Fatal(err)
		}
		if _, err := client.WaitAuthorization(ctx, z.URI); err != nil {
			t.Fatalf("authorization: %v", err)
		}
	}
	if order, err = client.WaitOrder(ctx, order.URI); err != nil {
		t.Fatal(err)
	}
	certKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{name}}, certKey)
	if err != nil {
		t.Fatal(err)
	}
	ders, _, err := client.CreateCertFromOrder(ctx, order, csr, true)
	if err != nil {
		t.Fatalf("finalize: %v", err)
	}
	if len(ders) < 2 {
		t.Fatalf("got %d certificates, want leaf and intermediate", len(ders))
	}
	leaf, err := x509.ParseCertificate(ders[0])
	if err != nil {
		t.Fatal(err)
	}
	inter := x509.NewCertPool()
	for _, d := range ders[1:] {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			t.Fatal(err)
		}
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: p.Roots(), Intermediates: inter, DNSName: name}); err != nil {
		t.Errorf("issued certificate does not verify against RootPEM: %v", err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: x509.NewCertPool(), Intermediates: inter, DNSName: name}); err == nil {
		t.Error("issued certificate verifies without Pebble's root")
	}
	if life := leaf.NotAfter.Sub(leaf.NotBefore); life < validity-2*time.Second || life > validity {
		t.Errorf("certificate lives %s, want about %s", life, validity)
	}
}

// TestHeld: with Held the directory answers nothing until Release; Stop
// does not hang on a request still held.
func TestHeld(t *testing.T) {
	p := start(t, Options{Held: true})
	client := directoryClient(t, p)
	client.Timeout = 300 * time.Millisecond
	if resp, err := client.Get(p.DirectoryURL); err == nil {
		resp.Body.Close()
		t.Fatalf("held directory answered %s", resp.Status)
	}
	client.Timeout = 10 * time.Second
	got := make(chan error, 1)
	go func() {
		resp, err := client.Get(p.DirectoryURL)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				err = errors.New(resp.Status)
			}
		}
		got <- err
	}()
	time.Sleep(100 * time.Millisecond) // let the request reach the gate
	p.Release()
	p.Release() // twice is fine
	if err := <-got; err != nil {
		t.Fatalf("directory after Release: %v", err)
	}

	q := start(t, Options{Held: true})
	qc := directoryClient(t, q)
	go func() {
		if resp, err := qc.Get(q.DirectoryURL); err == nil {
			resp.Body.Close()
		}
	}()
	time.Sleep(100 * time.Millisecond)
	stopped := make(chan struct{})
	go func() { q.Stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("Stop hangs on a held request")
	}
}

// TestChallengePortsStayFree: the challenge ports Start picks are still
// free for the client under test once Start returns, whatever Start and
// other code bound meanwhile (issue #15: the DNS server, binding port 0,
// was given the tls-alpn-01 port picked a moment before). They lie
// outside the kernel's ephemeral range, where no port-0 bind goes.
func TestChallengePortsStayFree(t *testing.T) {
	lo, hi := 32768, 60999
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		fmt.Sscan(string(b), &lo, &hi)
	}
	for range 5 {
		p := start(t, Options{Dir: t.TempDir()})
		_, dnsPort, _ := net.SplitHostPort(p.DNSAddr)
		for _, port := range []int{p.HTTPPort, p.TLSPort} {
			if port >= lo && port <= hi {
				t.Errorf("challenge port %d is in the ephemeral range %d-%d", port, lo, hi)
			}
			if fmt.Sprint(port) == dnsPort {
				t.Errorf("challenge port %d is the DNS server's", port)
			}
			ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
			if err != nil {
				t.Errorf("challenge port %d taken after Start: %v", port, err)
				continue
			}
			ln.Close()
		}
		p.Stop()
	}
}

// TestHeldAbandonedGetsNoAnswer: a held request whose client goes away
// gets no answer at all. An empty 200 written as the handler gave up was
// read as the directory's answer by a client whose timeout fired at that
// moment (TestHeld failed a few runs in a hundred on a busy machine).
func TestHeldAbandonedGetsNoAnswer(t *testing.T) {
	p := start(t, Options{Held: true})
	pemData, err := os.ReadFile(p.DirectoryCAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemData)
	host := strings.TrimPrefix(strings.TrimSuffix(p.DirectoryURL, "/dir"), "https://")
	c, err := tls.Dial("tcp", host, &tls.Config{RootCAs: pool, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET /dir HTTP/1.1\r\nHost: "+host+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // let the request reach the gate
	// The client is done sending: the server sees it leave.
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(c); len(b) != 0 {
		t.Errorf("abandoned held request answered %q, want nothing", b)
	}
}
