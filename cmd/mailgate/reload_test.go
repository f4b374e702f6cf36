package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/cmd/mailgate/internal/demo"
	"github.com/mailgate/mailgate/tlsconf"
)

// writeCert writes a self-signed certificate and key for localhost.
func writeCert(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600)
	return certFile, keyFile
}

// A reload whose certificate file is broken changes nothing else either:
// the policy of the new config is not applied and the reload gauge says 0.
func TestReloadWithBrokenCertificateKeepsEverything(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	b, err := demo.Start(ctx, log)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	pop3, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pop3.Close()
	certFile, keyFile := writeCert(t, t.TempDir())
	mk := func(allow string) *Config {
		c := opsConfig(b, pop3.Addr().String())
		c.TLS = tlsconf.Config{Certificates: []tlsconf.CertFile{{Cert: certFile, Key: keyFile}}, WatchInterval: time.Hour}
		c.Policy.AllowCountries = []string{allow}
		return c
	}
	g, err := startGateway(mk("US"), log)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		g.shutdown(sctx)
	}()
	e := &opsEnv{g: g, imap: g.lns[0].Addr().String(), admin: newAdminServer(g, "", nil)}

	os.WriteFile(certFile, []byte("-----BEGIN CERTIFICATE-----\nbroken\n"), 0o600)
	if err := g.reload(func() (*Config, error) { return mk("DE"), nil }); err == nil || !strings.Contains(err.Error(), "tls") {
		t.Fatalf("reload with a broken certificate: err = %v, want a tls error", err)
	}
	// 127.0.0.1 is US: still allowed, so the DE-only policy was not applied.
	if r := imapLogin(t, e.imap, "127.0.0.1", "alice@example.test", "alicepass"); !strings.HasPrefix(r, "a OK") {
		t.Errorf("login after the refused reload = %q: the new policy leaked in", r)
	}
	_, body := e.get(t, "/metrics")
	wantSeries(t, body, "mailgate_config_last_reload_successful", "0")

	// With the certificate repaired, the same reload goes through.
	writeCert(t, filepath.Dir(certFile))
	if err := g.reload(func() (*Config, error) { return mk("DE"), nil }); err != nil {
		t.Fatalf("reload after repair: %v", err)
	}
	if r := imapLogin(t, e.imap, "127.0.0.1", "alice@example.test", "alicepass"); !strings.HasPrefix(r, "a NO") {
		t.Errorf("login after reload to DE only = %q, want NO", r)
	}
}
