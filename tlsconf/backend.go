package tlsconf

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// BackendTLS is the `tls_verify:` part of a backend's config: how mailgate
// verifies a backend on another host. Whether TLS is implicit or STARTTLS
// is the backend's `tls:` setting. With none of CAFile, PinSHA256 and
// Insecure set, the system roots verify the backend's name.
type BackendTLS struct {
	// ServerName is the name to send as SNI and to verify; default the
	// host part of the backend address (the caller fills it in).
	ServerName string `yaml:"server_name"`
	// CAFile is a PEM bundle to verify against instead of system roots.
	CAFile string `yaml:"ca_file"`
	// PinSHA256 is the SHA-256 of the backend leaf certificate's
	// SubjectPublicKeyInfo, as 64 hex digits (colons allowed) or base64,
	// optionally prefixed "sha256//" as curl writes it. With a pin, the
	// pin alone decides: self-signed backends work, and renewals that keep
	// the key keep working.
	PinSHA256 string `yaml:"pin_sha256"`
	// Insecure skips all verification. Only for tests; logged loudly.
	Insecure bool `yaml:"insecure"`
}

// Validate reports problems with key paths under prefix (for example
// "backends.imap.tls_verify").
func (b *BackendTLS) Validate(prefix string) error {
	var errs []error
	set := 0
	if b.CAFile != "" {
		set++
	}
	if b.PinSHA256 != "" {
		set++
		if _, err := ParsePin(b.PinSHA256); err != nil {
			errs = append(errs, fmt.Errorf("%w: %s.pin_sha256: %v", ErrConfig, prefix, err))
		}
	}
	if b.Insecure {
		set++
	}
	if set > 1 {
		errs = append(errs, fmt.Errorf("%w: %s: ca_file, pin_sha256 and insecure exclude each other", ErrConfig, prefix))
	}
	return errors.Join(errs...)
}

// ParsePin decodes a pin_sha256 value into its 32 bytes.
func ParsePin(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	s = strings.TrimPrefix(s, "sha256//")
	if h := strings.ReplaceAll(s, ":", ""); len(h) == 2*sha256.Size {
		if b, err := hex.DecodeString(h); err == nil {
			return b, nil
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil && len(b) == sha256.Size {
			return b, nil
		}
	}
	return nil, fmt.Errorf("not a SHA-256 digest: want 64 hex digits or 44 base64 characters, got %d characters", len(s))
}

// PinOf returns the pin of a certificate, base64 as curl and openssl
// print it, for docs and log messages.
func PinOf(c *x509.Certificate) string {
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// BackendConfig builds the client config for dialling a backend. TLS 1.2
// is the minimum here too.
func BackendConfig(b BackendTLS) (*tls.Config, error) {
	if err := b.Validate("tls_verify"); err != nil {
		return nil, err
	}
	c := &tls.Config{ServerName: b.ServerName, MinVersion: tls.VersionTLS12}
	switch {
	case b.Insecure:
		c.InsecureSkipVerify = true
	case b.PinSHA256 != "":
		pin, _ := ParsePin(b.PinSHA256) // checked by Validate
		// Chain and name checks are replaced by the pin, which is
		// stronger: it names exactly one key.
		c.InsecureSkipVerify = true
		c.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return ErrPin
			}
			sum := sha256.Sum256(cs.PeerCertificates[0].RawSubjectPublicKeyInfo)
			if subtle.ConstantTimeCompare(sum[:], pin) != 1 {
				return fmt.Errorf("%w: got %s", ErrPin, PinOf(cs.PeerCertificates[0]))
			}
			return nil
		}
	case b.CAFile != "":
		pool, err := loadPool(b.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls_verify.ca_file: %w", err)
		}
		c.RootCAs = pool
	}
	return c, nil
}

// x509Leaf parses the leaf of a certificate missing its Leaf field.
func x509Leaf(c *tls.Certificate) (*x509.Certificate, error) {
	if len(c.Certificate) == 0 {
		return nil, errors.New("empty certificate chain")
	}
	return x509.ParseCertificate(c.Certificate[0])
}
