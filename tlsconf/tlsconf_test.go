package tlsconf

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/internal/testwait"
)

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	good := CertFile{Cert: filepath.Join(dir, "a.crt"), Key: filepath.Join(dir, "a.key")}
	tests := []struct {
		name string
		c    Config
		want []string // substrings of the error; nil means valid
	}{
		{"files", Config{Certificates: []CertFile{good}}, nil},
		{"self-signed", Config{SelfSigned: true}, nil},
		{"acme", Config{ACME: &ACME{Domains: []string{"mail.example.org"}, CacheDir: dir}}, nil},
		{"no source", Config{}, []string{"tls.certificates: no certificate source"}},
		{"missing key", Config{Certificates: []CertFile{good, {Cert: "x"}}}, []string{"tls.certificates[1].key: missing"}},
		{"version", Config{SelfSigned: true, MinVersion: "1.1"}, []string{"tls.min_version"}},
		{"client auth without ca", Config{SelfSigned: true, ClientAuth: "require"}, []string{"tls.client_ca: required"}},
		{"client auth value", Config{SelfSigned: true, ClientAuth: "maybe"}, []string{"tls.client_auth"}},
		{"acme everything wrong", Config{ACME: &ACME{
			Domains:      []string{"*.example.org", "localhost", "MAIL.example.org", "bad_name.example.org"},
			DirectoryURL: "http://ca.example/dir", Challenges: []string{"dns-01"}, Fallback: "files",
			Email: "not an email", HTTPAddress: "80",
		}}, []string{
			"tls.acme.http_address",
			"tls.acme.domains[0]: wildcards", "tls.acme.domains[1]", "tls.acme.domains[3]",
			"tls.acme.cache_dir: required", "tls.acme.directory_url", "tls.acme.challenges[0]",
			"tls.acme.fallback", "tls.acme.email",
		}},
		{"acme no domains", Config{ACME: &ACME{CacheDir: dir}}, []string{"tls.acme.domains: at least one"}},
		{"negative", Config{SelfSigned: true, WatchInterval: -1}, []string{"tls.watch_interval"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.c.Validate()
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrConfig) {
				t.Fatalf("Validate() = %v, want ErrConfig", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %v\nwant it to mention %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "domains[2]") {
				t.Errorf("upper-case domain should be normalised, got %v", err)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	m, err := New(Config{SelfSigned: true}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	c := m.ServerConfig("imap")
	if c.MinVersion != tls.VersionTLS12 {
		t.Errorf("MinVersion = %x, want TLS 1.2", c.MinVersion)
	}
	if len(c.NextProtos) != 1 || c.NextProtos[0] != "imap" {
		t.Errorf("NextProtos = %q, want [imap]", c.NextProtos)
	}
	if m.ServerConfig("imap") != c || m.ServerConfig("smtp") == c {
		t.Error("ServerConfig should return one shared config per protocol")
	}
}

func TestNewErrorNamesFile(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t)
	certPEM, keyPEM, _ := ca.issue(t, "ecdsa", time.Now().Add(time.Hour), "mail.example.org")
	_, otherKey, _ := ca.issue(t, "ecdsa", time.Now().Add(time.Hour), "mail.example.org")
	ok := writePair(t, dir, "ok", certPEM, keyPEM)
	mismatch := writePair(t, dir, "mismatch", certPEM, otherKey)
	garbage := writePair(t, dir, "garbage", []byte("not a certificate"), keyPEM)
	missing := CertFile{Cert: filepath.Join(dir, "nope.crt"), Key: ok.Key}
	for _, tt := range []struct {
		cf   CertFile
		want string
	}{
		{mismatch, mismatch.Key},
		{garbage, garbage.Cert},
		{missing, missing.Cert},
	} {
		_, err := New(Config{Certificates: []CertFile{ok, tt.cf}}, testLogger(t))
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "tls.certificates[1]") {
			t.Errorf("New with %+v = %v, want error naming %s", tt.cf, err, tt.want)
		}
	}
}

// TestSNISelection: exact names, RSA vs ECDSA by client capability,
// wildcards one label deep, the default without SNI or for unknown names.
func TestSNISelection(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t)
	exp := time.Now().Add(time.Hour)
	defC, defK, defLeaf := ca.issue(t, "ecdsa", exp, "mail.example.org", "imap.example.org")
	rsaC, rsaK, rsaLeaf := ca.issue(t, "rsa", exp, "mail.example.org", "imap.example.org")
	wC, wK, wLeaf := ca.issue(t, "ecdsa", exp, "*.example.net")
	oC, oK, oLeaf := ca.issue(t, "ecdsa", exp, "mx.other.test")
	m, err := New(Config{Certificates: []CertFile{
		writePair(t, dir, "def", defC, defK),
		writePair(t, dir, "rsa", rsaC, rsaK),
		writePair(t, dir, "wild", wC, wK),
		writePair(t, dir, "other", oC, oK),
	}}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	addr := serveEcho(t, m.ServerConfig("imap"))
	rsaOnly := []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256}
	tests := []struct {
		sni    string
		suites []uint16
		want   *x509.Certificate
	}{
		{"mail.example.org", nil, defLeaf},
		{"IMAP.Example.ORG", nil, defLeaf},
		{"mail.example.org", rsaOnly, rsaLeaf},
		{"", rsaOnly, rsaLeaf}, // default group includes the RSA twin
		{"a.example.net", nil, wLeaf},
		{"a.b.example.net", nil, defLeaf}, // wildcards cover one label
		{"example.net", nil, defLeaf},
		{"mx.other.test", nil, oLeaf},
		{"", nil, defLeaf},
		{"unknown.example.com", nil, defLeaf},
	}
	for _, tt := range tests {
		cfg := &tls.Config{ServerName: tt.sni, InsecureSkipVerify: true, CipherSuites: tt.suites}
		if tt.suites != nil {
			cfg.MaxVersion = tls.VersionTLS12 // 1.2 lets the suites express RSA-only
		}
		c, err := dialTLS(t, addr, cfg)
		if err != nil {
			t.Errorf("SNI %q: handshake: %v", tt.sni, err)
			continue
		}
		if got := c.ConnectionState().PeerCertificates[0]; !got.Equal(tt.want) {
			t.Errorf("SNI %q suites %v: got cert for %v serial %v, want %v serial %v",
				tt.sni, tt.suites, got.DNSNames, got.SerialNumber, tt.want.DNSNames, tt.want.SerialNumber)
		}
	}
}

// TestReloadLiveSession: a reload (explicit and by file watching) leaves
// an established session working and gives new handshakes the new cert.
func TestReloadLiveSession(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t)
	c1, k1, leaf1 := ca.issue(t, "ecdsa", time.Now().Add(time.Hour), "mail.example.org")
	cf := writePair(t, dir, "mail", c1, k1)
	m, err := New(Config{Certificates: []CertFile{cf}, WatchInterval: 10 * time.Millisecond}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	addr := serveEcho(t, m.ServerConfig("imap"))
	client := &tls.Config{ServerName: "mail.example.org", RootCAs: ca.pool()}
	old, err := dialTLS(t, addr, client)
	if err != nil {
		t.Fatal(err)
	}
	echo(t, old, "a1 NOOP")

	c2, k2, leaf2 := ca.issue(t, "ecdsa", time.Now().Add(2*time.Hour), "mail.example.org")
	writeFile(t, cf.Key, k2)
	writeFile(t, cf.Cert, c2)
	if err := m.Reload(); err != nil {
		t.Fatalf("Reload() = %v", err)
	}
	echo(t, old, "a2 NOOP after reload")
	if got := peerSerial(old); got != leaf1.SerialNumber.Int64() {
		t.Errorf("old session serial = %d, want %d", got, leaf1.SerialNumber)
	}
	nc, err := dialTLS(t, addr, client)
	if err != nil {
		t.Fatal(err)
	}
	if got := peerSerial(nc); got != leaf2.SerialNumber.Int64() {
		t.Errorf("new handshake serial = %d, want %d", got, leaf2.SerialNumber)
	}

	// The watcher picks up a renewal without SIGHUP.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	defer func() { cancel(); <-done }()
	c3, k3, leaf3 := ca.issue(t, "ecdsa", time.Now().Add(3*time.Hour), "mail.example.org")
	time.Sleep(20 * time.Millisecond) // a distinct mtime even on coarse clocks
	writeFile(t, cf.Key, k3)
	writeFile(t, cf.Cert, c3)
	testwait.For(t, "watcher to load the renewed certificate", func() bool {
		c, err := dialTLS(t, addr, client)
		return err == nil && peerSerial(c) == leaf3.SerialNumber.Int64()
	})
	echo(t, old, "a3 NOOP after watched reload")
	echo(t, nc, "b1 NOOP after watched reload")
	if got := m.Expiry()["mail.example.org"]; !got.Equal(leaf3.NotAfter) {
		t.Errorf("Expiry()[mail.example.org] = %v, want %v", got, leaf3.NotAfter)
	}
}

// TestReloadBrokenKeepsOld: a broken or half-written replacement keeps
// the old certificate, the error names the file, and fixing it recovers.
func TestReloadBrokenKeepsOld(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t)
	c1, k1, leaf1 := ca.issue(t, "ecdsa", time.Now().Add(time.Hour), "mail.example.org")
	c2, k2, leaf2 := ca.issue(t, "rsa", time.Now().Add(time.Hour), "mail.example.org")
	cf := writePair(t, dir, "mail", c1, k1)
	m, err := New(Config{Certificates: []CertFile{cf}}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	addr := serveEcho(t, m.ServerConfig("smtp"))
	client := &tls.Config{ServerName: "mail.example.org", RootCAs: ca.pool()}
	check := func(want *x509.Certificate) {
		t.Helper()
		c, err := dialTLS(t, addr, client)
		if err != nil {
			t.Fatalf("handshake after reload: %v", err)
		}
		if got := peerSerial(c); got != want.SerialNumber.Int64() {
			t.Fatalf("serial = %d, want %d", got, want.SerialNumber)
		}
	}
	steps := []struct {
		name      string
		cert, key []byte
		wantFile  string
	}{
		{"garbage cert", []byte("-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n"), k1, cf.Cert},
		{"truncated cert", c2[:len(c2)/2], k1, cf.Cert},
		{"new cert, old key (half-way through a renewal)", c2, k1, cf.Key},
		{"empty key", c1, nil, cf.Key},
	}
	for _, s := range steps {
		writeFile(t, cf.Cert, s.cert)
		writeFile(t, cf.Key, s.key)
		err := m.Reload()
		if err == nil || !strings.Contains(err.Error(), s.wantFile) {
			t.Errorf("%s: Reload() = %v, want error naming %s", s.name, err, s.wantFile)
		}
		check(leaf1)
	}
	writeFile(t, cf.Cert, c2)
	writeFile(t, cf.Key, k2)
	if err := m.Reload(); err != nil {
		t.Fatalf("Reload() after fix = %v", err)
	}
	check(leaf2)
	os.Remove(cf.Cert)
	if err := m.Reload(); err == nil {
		t.Error("Reload() with a missing file = nil, want error")
	}
	check(leaf2)
}

func TestEncryptedKeys(t *testing.T) {
	plain, err := os.ReadFile("testdata/key-plain.pem")
	if err != nil {
		t.Fatal(err)
	}
	want, err := parsePrivateKeyPEM(plain, nil)
	if err != nil {
		t.Fatal(err)
	}
	pw := []byte("correct-horse")
	for _, tt := range []struct {
		file     string
		password []byte
		wantErr  error
	}{
		{"key-pkcs8-aes256-sha256.pem", pw, nil},
		{"key-pkcs8-aes128-sha1.pem", pw, nil},
		{"key-legacy-aes256.pem", pw, nil},
		{"key-pkcs8-aes256-sha256.pem", []byte("wrong"), ErrKeyPassword},
		{"key-legacy-aes256.pem", []byte("wrong"), ErrKeyPassword},
		{"key-pkcs8-aes256-sha256.pem", nil, ErrKeyPassword},
		{"key-legacy-aes256.pem", nil, ErrKeyPassword},
		{"key-pkcs8-3des-pbe.pem", pw, ErrKeyFormat}, // PKCS#12 PBE: refused with advice
	} {
		data, err := os.ReadFile(filepath.Join("testdata", tt.file))
		if err != nil {
			t.Fatal(err)
		}
		got, err := parsePrivateKeyPEM(data, tt.password)
		if tt.wantErr != nil {
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("parsePrivateKeyPEM(%s, %q) = %v, want %v", tt.file, tt.password, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("parsePrivateKeyPEM(%s) = %v", tt.file, err)
			continue
		}
		if !want.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(got.Public()) {
			t.Errorf("parsePrivateKeyPEM(%s) decrypted a different key", tt.file)
		}
	}
}

// TestEncryptedKeyFile loads an encrypted key through the config, the way
// an admin would, with the password in a file.
func TestEncryptedKeyFile(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t)
	keyPEM, _ := os.ReadFile("testdata/key-plain.pem")
	key, err := parsePrivateKeyPEM(keyPEM, nil)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificate(nil, &x509.Certificate{
		SerialNumber: bigInt(77), DNSNames: []string{"mail.example.org"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
	}, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	certFile := filepath.Join(dir, "c.pem")
	writeFile(t, certFile, pemCert(der))
	cf := CertFile{Cert: certFile, Key: "testdata/key-pkcs8-aes256-sha256.pem", KeyPasswordFile: "testdata/key-password.txt"}
	m, err := New(Config{Certificates: []CertFile{cf}}, testLogger(t))
	if err != nil {
		t.Fatalf("New with encrypted key: %v", err)
	}
	addr := serveEcho(t, m.ServerConfig("imap"))
	if _, err := dialTLS(t, addr, &tls.Config{ServerName: "mail.example.org", RootCAs: ca.pool()}); err != nil {
		t.Fatalf("handshake with encrypted key: %v", err)
	}
	cf.KeyPasswordFile = ""
	if _, err := New(Config{Certificates: []CertFile{cf}}, testLogger(t)); !errors.Is(err, ErrKeyPassword) || !strings.Contains(err.Error(), cf.Key) {
		t.Errorf("New without password = %v, want ErrKeyPassword naming %s", err, cf.Key)
	}
}

// TestALPN: ALPACA defence. No ALPN or the listener's own protocol is
// accepted; anything else, http/1.1 and h2 included, is refused.
func TestALPN(t *testing.T) {
	m, err := New(Config{SelfSigned: true}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	imap := serveEcho(t, m.ServerConfig("imap"))
	pop3 := serveEcho(t, m.ServerConfig("pop3"))
	tests := []struct {
		addr   string
		protos []string
		ok     bool
		want   string
	}{
		{imap, nil, true, ""},
		{imap, []string{"imap"}, true, "imap"},
		{imap, []string{"http/1.1", "imap"}, true, "imap"},
		{imap, []string{"http/1.1"}, false, ""},
		{imap, []string{"h2", "http/1.1"}, false, ""},
		{imap, []string{"pop3"}, false, ""},
		{pop3, []string{"imap"}, false, ""},
		{pop3, []string{"pop3"}, true, "pop3"},
	}
	for _, tt := range tests {
		for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
			c, err := dialTLS(t, tt.addr, &tls.Config{InsecureSkipVerify: true, NextProtos: tt.protos, MaxVersion: v})
			if !tt.ok {
				if err == nil || !strings.Contains(err.Error(), "no application protocol") {
					t.Errorf("ALPN %q (TLS %x): err = %v, want no_application_protocol alert", tt.protos, v, err)
				}
				continue
			}
			if err != nil {
				t.Errorf("ALPN %q (TLS %x): %v", tt.protos, v, err)
				continue
			}
			if got := c.ConnectionState().NegotiatedProtocol; got != tt.want {
				t.Errorf("ALPN %q: negotiated %q, want %q", tt.protos, got, tt.want)
			}
		}
	}
}

func TestVersions(t *testing.T) {
	for _, tt := range []struct {
		min    string
		client uint16
		ok     bool
	}{
		{"", tls.VersionTLS10, false},
		{"", tls.VersionTLS11, false},
		{"", tls.VersionTLS12, true},
		{"", tls.VersionTLS13, true},
		{"1.3", tls.VersionTLS12, false},
		{"1.3", tls.VersionTLS13, true},
	} {
		m, err := New(Config{SelfSigned: true, MinVersion: tt.min}, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		addr := serveEcho(t, m.ServerConfig("imap"))
		_, err = dialTLS(t, addr, &tls.Config{InsecureSkipVerify: true, MinVersion: tt.client, MaxVersion: tt.client})
		if (err == nil) != tt.ok {
			t.Errorf("min_version %q, client TLS %x: err = %v, want ok=%v", tt.min, tt.client, err, tt.ok)
		}
	}
}

// TestHandshakeTimeout: a bound applied as the proxy does
// (limits.tls_handshake_timeout) ends a handshake from a client that never
// speaks.
func TestHandshakeTimeout(t *testing.T) {
	m, err := New(Config{SelfSigned: true}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	silent, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err = tls.Server(c, m.ServerConfig("imap")).HandshakeContext(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("handshake with silent client = %v, want deadline exceeded", err)
	}
}

func TestClientAuth(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t)
	caFile := filepath.Join(dir, "clients.pem")
	writeFile(t, caFile, ca.pem)
	cc, ck, _ := ca.issue(t, "ecdsa", time.Now().Add(time.Hour), "admin.example.org")
	clientCert, err := tls.X509KeyPair(cc, ck)
	if err != nil {
		t.Fatal(err)
	}
	other := newTestCA(t)
	oc, ok, _ := other.issue(t, "ecdsa", time.Now().Add(time.Hour), "admin.example.org")
	otherCert, _ := tls.X509KeyPair(oc, ok)
	for _, mode := range []string{"request", "require"} {
		m, err := New(Config{SelfSigned: true, ClientCA: caFile, ClientAuth: mode}, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		addr := serveEcho(t, m.ServerConfig("imap"))
		for _, tt := range []struct {
			certs []tls.Certificate
			ok    bool
		}{
			{nil, mode == "request"},
			{[]tls.Certificate{clientCert}, true},
			{[]tls.Certificate{otherCert}, false},
		} {
			c, err := dialTLS(t, addr, &tls.Config{InsecureSkipVerify: true, Certificates: tt.certs, MaxVersion: tls.VersionTLS12})
			if err == nil {
				// With TLS 1.3 the server's verdict arrives after the
				// client's handshake; an echo proves it was accepted.
				c.SetDeadline(time.Now().Add(5 * time.Second))
				_, err = c.Write([]byte("x\n"))
				if err == nil {
					_, err = c.Read(make([]byte, 2))
				}
			}
			if (err == nil) != tt.ok {
				t.Errorf("client_auth %s, %d certs: err = %v, want ok=%v", mode, len(tt.certs), err, tt.ok)
			}
		}
	}
}

// TestSessionResumption: tickets resume on the same listener protocol,
// survive a rotation, die after ticketKeysKept rotations, and never
// resume across protocols.
func TestSessionResumption(t *testing.T) {
	m, err := New(Config{SelfSigned: true}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	imap := serveEcho(t, m.ServerConfig("imap"))
	smtp := serveEcho(t, m.ServerConfig("smtp"))
	resumed := func(cache tls.ClientSessionCache, addr string) bool {
		t.Helper()
		c, err := dialTLS(t, addr, &tls.Config{InsecureSkipVerify: true, ServerName: "localhost", ClientSessionCache: cache})
		if err != nil {
			t.Fatal(err)
		}
		echo(t, c, "x") // TLS 1.3 tickets arrive after the handshake
		return c.ConnectionState().DidResume
	}
	cache := tls.NewLRUClientSessionCache(4)
	if resumed(cache, imap) {
		t.Fatal("first connection resumed")
	}
	if !resumed(cache, imap) {
		t.Error("second connection did not resume")
	}
	if err := m.rotateTicketKeys(); err != nil {
		t.Fatal(err)
	}
	if !resumed(cache, imap) {
		t.Error("ticket from before one rotation did not resume")
	}
	if resumed(cache, smtp) {
		t.Error("IMAP ticket resumed a session on the SMTP listener")
	}
	cache = tls.NewLRUClientSessionCache(4)
	resumed(cache, imap)
	for range ticketKeysKept {
		if err := m.rotateTicketKeys(); err != nil {
			t.Fatal(err)
		}
	}
	if resumed(cache, imap) {
		t.Errorf("ticket resumed after %d rotations", ticketKeysKept)
	}
}

// TestACMEFallback: with ACME configured and no certificate issued (the
// CA is unreachable), handshakes are served at once from the fallback.
func TestACMEFallback(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t)
	fc, fk, fleaf := ca.issue(t, "ecdsa", time.Now().Add(time.Hour), "fallback.example.org")
	files := []CertFile{writePair(t, dir, "fb", fc, fk)}
	dead := "https://127.0.0.1:1/directory" // nothing listens on port 1
	for _, fallback := range []string{"self-signed", "files"} {
		m, err := New(Config{Certificates: files, ACME: &ACME{
			Domains: []string{"mail.example.org"}, CacheDir: filepath.Join(dir, fallback),
			DirectoryURL: dead, Fallback: fallback, Challenges: []string{ChallengeHTTP01},
			HTTPAddress: "127.0.0.1:0",
		}}, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- m.Run(ctx) }()
		addr := serveEcho(t, m.ServerConfig("imap"))
		c, err := dialTLS(t, addr, &tls.Config{ServerName: "mail.example.org", InsecureSkipVerify: true})
		if err != nil {
			t.Fatalf("fallback %s: %v", fallback, err)
		}
		got := c.ConnectionState().PeerCertificates[0]
		switch fallback {
		case "files":
			if !got.Equal(fleaf) {
				t.Errorf("fallback files: got %v", got.DNSNames)
			}
		default:
			if got.VerifyHostname("mail.example.org") != nil || got.Equal(fleaf) {
				t.Errorf("fallback self-signed: got %v", got.DNSNames)
			}
		}
		if _, ok := m.Expiry()["mail.example.org"]; ok {
			t.Error("Expiry() lists an ACME domain that has no certificate")
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v", err)
		}
	}
}

// A certificate that lives no longer than a set renew_before would be
// renewed back to back by autocert: the admin gets an error naming a
// setting that works; a longer-lived one, or renew_before left unset
// (a third of the lifetime), says nothing of the kind.
func TestACMERenewBeforeLongerThanLifetimeIsReported(t *testing.T) {
	ca := newTestCA(t)
	for _, tc := range []struct {
		life, renewBefore time.Duration
		want              bool
	}{
		{24 * time.Hour, MaxRenewBefore, true},
		{90 * 24 * time.Hour, MaxRenewBefore, false},
		// Unset, autocert takes a third of the lifetime: never due at once.
		{24 * time.Hour, 0, false},
	} {
		var logs strings.Builder
		m := &Manager{
			cfg:    Config{ACME: &ACME{RenewBefore: tc.renewBefore}},
			log:    slog.New(slog.NewTextHandler(&logs, nil)),
			issued: map[string]*tls.Certificate{},
		}
		m.set.Store(&certSet{})
		// issue backdates NotBefore by an hour.
		certPEM, keyPEM, _ := ca.issue(t, "ecdsa", time.Now().Add(tc.life-time.Hour), "mail.example.test")
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		m.storeIssued("mail.example.test", &cert)
		got := strings.Contains(logs.String(), "renew_before is not shorter than the certificate's lifetime")
		if got != tc.want {
			t.Errorf("lifetime %s, renew_before %s: warned %v, want %v:\n%s", tc.life, tc.renewBefore, got, tc.want, logs.String())
		}
		if tc.want && !strings.Contains(logs.String(), "set_renew_before_to=8h0m0s") {
			t.Errorf("lifetime %s: no usable setting named:\n%s", tc.life, logs.String())
		}
	}
}
