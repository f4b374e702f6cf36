package tlsconf

import (
	"crypto/tls"
	"net"
	"testing"
	"time"
)

// benchManager has an ECDSA and an RSA certificate for one name, a
// wildcard, and a default, like a typical multi-domain setup.
func benchManager(b *testing.B) (*Manager, *testCA) {
	b.Helper()
	dir := b.TempDir()
	ca := newTestCA(b)
	exp := time.Now().Add(time.Hour)
	var files []CertFile
	for i, spec := range []struct{ alg, name string }{
		{"ecdsa", "mail.example.org"}, {"rsa", "mail.example.org"}, {"ecdsa", "*.example.net"}, {"ecdsa", "mx.other.test"},
	} {
		c, k, _ := ca.issue(b, spec.alg, exp, spec.name)
		files = append(files, writePair(b, dir, string(rune('a'+i)), c, k))
	}
	m, err := New(Config{Certificates: files}, nil)
	if err != nil {
		b.Fatal(err)
	}
	return m, ca
}

// BenchmarkGetCertificate is the per-handshake certificate choice.
func BenchmarkGetCertificate(b *testing.B) {
	m, _ := benchManager(b)
	for _, tt := range []struct{ name, sni string }{
		{"exact", "mail.example.org"}, {"wildcard", "imap.example.net"}, {"default", ""}, {"unknown", "x.example.com"},
	} {
		hello := &tls.ClientHelloInfo{
			ServerName: tt.sni, SupportedVersions: []uint16{tls.VersionTLS13},
			SignatureSchemes: []tls.SignatureScheme{tls.ECDSAWithP256AndSHA256, tls.PSSWithSHA256},
			SupportedCurves:  []tls.CurveID{tls.X25519, tls.CurveP256},
		}
		b.Run(tt.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := m.getCertificate(hello); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkHandshake is a full TLS 1.3 handshake over loopback with an
// ECDSA certificate, fresh and resumed from a ticket.
func BenchmarkHandshake(b *testing.B) {
	m, ca := benchManager(b)
	addr := serveEcho(b, m.ServerConfig("imap"))
	for _, resume := range []bool{false, true} {
		name := "full"
		if resume {
			name = "resumed"
		}
		b.Run(name, func(b *testing.B) {
			cfg := &tls.Config{ServerName: "mail.example.org", RootCAs: ca.pool()}
			if resume {
				cfg.ClientSessionCache = tls.NewLRUClientSessionCache(1)
				c, err := dialTLS(b, addr, cfg)
				if err != nil {
					b.Fatal(err)
				}
				echo(b, c, "x") // receive the ticket
				c.Close()
			}
			b.ReportAllocs()
			for b.Loop() {
				raw, err := net.Dial("tcp", addr)
				if err != nil {
					b.Fatal(err)
				}
				c := tls.Client(raw, cfg)
				if err := c.Handshake(); err != nil {
					b.Fatal(err)
				}
				if resume {
					echo(b, c, "x")
					if !c.ConnectionState().DidResume {
						b.Fatal("did not resume")
					}
				}
				c.Close()
			}
		})
	}
}
