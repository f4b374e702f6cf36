package tlsconf

import (
	"bytes"
	"crypto"
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
	"strings"
	"time"
)

// Limits on files read at start-up and on every reload.
const (
	// maxPEMFileSize: a full chain of a few RSA-4096 certificates is under
	// 10 KiB; 1 MiB leaves room for bundles while refusing a wrong path
	// pointing at something huge.
	maxPEMFileSize = 1 << 20
	// maxPasswordSize: a password file is one line.
	maxPasswordSize = 4096
)

// readLimited reads a whole regular file of at most limit bytes.
func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil {
		return nil, err
	} else if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: more than the %d bytes allowed", path, limit)
	}
	return b, nil
}

// loadCertFile reads one certificate/key pair and checks that they belong
// together and that the leaf parses. Errors name the file at fault.
func loadCertFile(cf CertFile) (*tls.Certificate, error) {
	certPEM, err := readLimited(cf.Cert, maxPEMFileSize)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCertificate, err)
	}
	keyPEM, err := readLimited(cf.Key, maxPEMFileSize)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCertificate, err)
	}
	var password []byte
	if cf.KeyPasswordFile != "" {
		p, err := readLimited(cf.KeyPasswordFile, maxPasswordSize)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrCertificate, err)
		}
		password = bytes.TrimRight(p, "\r\n")
	}
	chain, err := parseCertChainPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrCertificate, cf.Cert, err)
	}
	key, err := parsePrivateKeyPEM(keyPEM, password)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrCertificate, cf.Key, err)
	}
	return assemble(chain, key, cf)
}

// assemble joins a parsed chain and key into a tls.Certificate.
func assemble(chain []*x509.Certificate, key crypto.Signer, cf CertFile) (*tls.Certificate, error) {
	pub, ok := chain[0].PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(key.Public()) {
		return nil, fmt.Errorf("%w: %s does not match the certificate in %s", ErrCertificate, cf.Key, cf.Cert)
	}
	c := &tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, x := range chain {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c, nil
}

// parseCertChainPEM returns every CERTIFICATE block in data, leaf first.
// Other block types (a key bundled in the same file) are skipped.
func parseCertChainPEM(data []byte) ([]*x509.Certificate, error) {
	var chain []*x509.Certificate
	for len(data) > 0 {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(chain)+1, err)
		}
		chain = append(chain, c)
	}
	if len(chain) == 0 {
		return nil, fmt.Errorf("no PEM CERTIFICATE block found")
	}
	return chain, nil
}

// certSet is an immutable snapshot of every certificate a handshake may
// get. Replaced whole on reload or renewal.
type certSet struct {
	// exact maps a lower-case DNS name to its certificates, in config
	// order (RSA and ECDSA variants may share a name).
	exact map[string][]*tls.Certificate
	// wildcard maps the suffix of a "*.example.org" name ("example.org")
	// to its certificates.
	wildcard map[string][]*tls.Certificate
	// def serves clients without SNI or with an unknown name.
	def []*tls.Certificate
	// acme maps an ACME domain to its issued certificate; domains listed
	// in acmeDomains without an entry get fallback.
	acme        map[string]*tls.Certificate
	acmeDomains map[string]bool
	// acmeOrder lists the ACME domains as configured; the first one's
	// certificate serves clients without SNI when there are no files.
	acmeOrder []string
	// fallback is served for ACME domains until issuance succeeds.
	fallback []*tls.Certificate
}

// newFileSet indexes file certificates; the first is the default, and
// later certificates with the same names join it so an RSA-only client
// without SNI can still get the RSA variant.
func newFileSet(certs []*tls.Certificate) *certSet {
	s := &certSet{exact: map[string][]*tls.Certificate{}, wildcard: map[string][]*tls.Certificate{}}
	for i, c := range certs {
		for _, n := range certNames(c.Leaf) {
			if suffix, ok := strings.CutPrefix(n, "*."); ok {
				s.wildcard[suffix] = append(s.wildcard[suffix], c)
			} else {
				s.exact[n] = append(s.exact[n], c)
			}
		}
		if i == 0 || sameNames(c.Leaf, certs[0].Leaf) {
			s.def = append(s.def, c)
		}
	}
	return s
}

// certNames returns the leaf's DNS SANs, or its CN when there are none.
func certNames(leaf *x509.Certificate) []string {
	var names []string
	for _, n := range leaf.DNSNames {
		names = append(names, normalizeName(n))
	}
	if len(names) == 0 && leaf.Subject.CommonName != "" {
		names = append(names, normalizeName(leaf.Subject.CommonName))
	}
	return names
}

func sameNames(a, b *x509.Certificate) bool {
	an, bn := certNames(a), certNames(b)
	if len(an) != len(bn) {
		return false
	}
	for i := range an {
		if an[i] != bn[i] {
			return false
		}
	}
	return true
}

// withACME returns a copy of s sharing the file indexes, with the ACME
// view replaced.
func (s *certSet) withACME(order []string, domains map[string]bool, issued map[string]*tls.Certificate, fallback []*tls.Certificate) *certSet {
	n := *s
	n.acmeOrder = order
	n.acmeDomains = domains
	n.acme = issued
	n.fallback = fallback
	return &n
}

// choose picks the certificate for hello: an ACME certificate for an ACME
// domain (or the fallback until one exists), else an exact name, else a
// wildcard one label deep, else the default. Among candidates the first
// the client supports wins (ECDSA vs RSA), else the first.
func (s *certSet) choose(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	name := normalizeName(hello.ServerName)
	var cands []*tls.Certificate
	switch {
	case name != "" && s.acmeDomains[name]:
		if c := s.acme[name]; c != nil {
			return c, nil
		}
		cands = s.fallback
	case name != "" && len(s.exact[name]) > 0:
		cands = s.exact[name]
	default:
		if _, rest, ok := strings.Cut(name, "."); ok && len(s.wildcard[rest]) > 0 {
			cands = s.wildcard[rest]
		}
	}
	if len(cands) == 0 {
		cands = s.def
	}
	if len(cands) == 0 {
		// ACME only, and no SNI or an unknown name: the first ACME
		// domain's certificate once issued (clients connecting by IP
		// still see a CA-signed certificate), else the fallback.
		for _, d := range s.acmeOrder {
			if c := s.acme[d]; c != nil {
				return c, nil
			}
		}
		cands = s.fallback
	}
	if len(cands) == 0 {
		return nil, fmt.Errorf("%w for server name %q", ErrNoCertificate, hello.ServerName)
	}
	for _, c := range cands {
		if hello.SupportsCertificate(c) == nil {
			return c, nil
		}
	}
	return cands[0], nil
}

// selfSigned makes an ECDSA P-256 certificate for names (DNS names or IP
// literals), valid for a year.
func selfSigned(names []string) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: names[0], Organization: []string{"mailgate self-signed"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}
