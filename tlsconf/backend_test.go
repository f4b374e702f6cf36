package tlsconf

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBackendConfig: a backend on another host verified by pin, by CA
// file, by system roots, or not at all when insecure is written.
func TestBackendConfig(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t)
	certPEM, keyPEM, leaf := ca.issue(t, "ecdsa", time.Now().Add(time.Hour), "imap.backend.test", "127.0.0.1")
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	addr := serveEcho(t, &tls.Config{Certificates: []tls.Certificate{cert}})
	caFile := filepath.Join(dir, "ca.pem")
	writeFile(t, caFile, ca.pem)
	otherCA := filepath.Join(dir, "other.pem")
	writeFile(t, otherCA, newTestCA(t).pem)
	_, _, otherLeaf := ca.issue(t, "ecdsa", time.Now().Add(time.Hour), "imap.backend.test")

	sum := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	pinHex := hex.EncodeToString(sum[:])
	var colon []string
	for _, b := range sum {
		colon = append(colon, strings.ToUpper(hex.EncodeToString([]byte{b})))
	}
	tests := []struct {
		name    string
		b       BackendTLS
		wantErr error // nil: handshake succeeds; errAny: any failure
	}{
		{"pin base64", BackendTLS{PinSHA256: PinOf(leaf)}, nil},
		{"pin curl form", BackendTLS{PinSHA256: "sha256//" + PinOf(leaf)}, nil},
		{"pin hex", BackendTLS{PinSHA256: pinHex}, nil},
		{"pin hex colons", BackendTLS{PinSHA256: strings.Join(colon, ":")}, nil},
		{"wrong pin", BackendTLS{PinSHA256: PinOf(otherLeaf)}, ErrPin},
		{"ca file", BackendTLS{CAFile: caFile, ServerName: "imap.backend.test"}, nil},
		{"ca file by IP", BackendTLS{CAFile: caFile, ServerName: "127.0.0.1"}, nil},
		{"ca file wrong name", BackendTLS{CAFile: caFile, ServerName: "other.test"}, errAny},
		{"wrong ca", BackendTLS{CAFile: otherCA, ServerName: "imap.backend.test"}, errAny},
		{"system roots", BackendTLS{ServerName: "imap.backend.test"}, errAny},
		{"insecure", BackendTLS{Insecure: true}, nil},
	}
	for _, tt := range tests {
		cfg, err := BackendConfig(tt.b)
		if err != nil {
			t.Errorf("%s: BackendConfig() = %v", tt.name, err)
			continue
		}
		if cfg.MinVersion < tls.VersionTLS12 {
			t.Errorf("%s: MinVersion %x below TLS 1.2", tt.name, cfg.MinVersion)
		}
		_, err = dialTLS(t, addr, cfg)
		switch {
		case tt.wantErr == nil && err != nil:
			t.Errorf("%s: handshake: %v", tt.name, err)
		case tt.wantErr == errAny && err == nil, tt.wantErr == ErrPin && !errors.Is(err, ErrPin):
			t.Errorf("%s: handshake err = %v, want %v", tt.name, err, tt.wantErr)
		}
	}
}

var errAny = errors.New("any error")

func TestBackendValidate(t *testing.T) {
	for _, tt := range []struct {
		b    BackendTLS
		want string
	}{
		{BackendTLS{PinSHA256: "abc"}, "x.pin_sha256: not a SHA-256"},
		{BackendTLS{PinSHA256: strings.Repeat("a", 64), Insecure: true}, "exclude each other"},
		{BackendTLS{CAFile: "ca.pem", Insecure: true}, "exclude each other"},
	} {
		err := tt.b.Validate("x")
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Validate(%+v) = %v, want %q", tt.b, err, tt.want)
		}
		if _, err := BackendConfig(tt.b); err == nil {
			t.Errorf("BackendConfig(%+v) = nil error", tt.b)
		}
	}
	missing := filepath.Join(t.TempDir(), "missing-ca.pem")
	if _, err := BackendConfig(BackendTLS{CAFile: missing}); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("BackendConfig with missing CA file = %v, want error naming it", err)
	}
}
