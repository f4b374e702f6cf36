// Package tlsconf builds the *tls.Config each listener uses: certificate
// files chosen by SNI and reloaded when they change, or ACME (autocert);
// TLS 1.2 minimum; ALPN restricted to the listener's protocol (ALPACA).
// It also builds TLS configs for backends on other hosts.
//
// tlsconf imports no other mailgate package; proxy never imports tlsconf.
//
// # Implementation notes
//
// Every mail handshake reads one atomic pointer to the current certificate
// set (files plus ACME certificates plus the fallback). Reloads and
// renewals build a new set and swap the pointer, so a reload touches only
// handshakes that start after it and never an established session.
//
// ACME issuance and renewal happen only in background goroutines started
// by Run; a mail client's handshake never waits on the CA. Until the CA
// has issued, the fallback certificate is served.
package tlsconf

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"
)

// Errors returned by this package, wrapped with detail.
var (
	// ErrConfig: the tls: section is invalid.
	ErrConfig = errors.New("tlsconf: invalid configuration")
	// ErrCertificate: a certificate or key file could not be loaded.
	ErrCertificate = errors.New("tlsconf: certificate")
	// ErrNoCertificate: no certificate could be chosen for a handshake.
	ErrNoCertificate = errors.New("tlsconf: no certificate")
	// ErrPin: a backend's certificate does not match the configured pin.
	ErrPin = errors.New("tlsconf: backend certificate does not match pin_sha256")
)

// Defaults for zero values in Config.
const (
	// DefaultWatchInterval is how often certificate files are checked
	// for changes (mtime and size).
	DefaultWatchInterval = 30 * time.Second
	// DefaultTicketRotation: session ticket keys rotate daily; the two
	// previous keys are kept so tickets issued shortly before a rotation
	// still resume.
	DefaultTicketRotation = 24 * time.Hour
	// MaxRenewBefore: autocert renews at most 30 days before expiry;
	// unset, renew_before is a third of each certificate's lifetime up to
	// this (30 days for Let's Encrypt's 90-day certificates, 2 days for
	// 6-day ones).
	MaxRenewBefore = 720 * time.Hour
	// DefaultPollInterval: how often the ACME loop checks for a renewed
	// or newly issued certificate.
	DefaultPollInterval = time.Minute
	// LetsEncryptURL is the default ACME directory.
	LetsEncryptURL = "https://acme-v02.api.letsencrypt.org/directory"
	// LetsEncryptStagingURL is Let's Encrypt's staging directory, for
	// testing a setup without hitting production rate limits.
	LetsEncryptStagingURL = "https://acme-staging-v02.api.letsencrypt.org/directory"
)

// Challenge names accepted in ACME.Challenges.
const (
	ChallengeHTTP01    = "http-01"
	ChallengeTLSALPN01 = "tls-alpn-01"
)

// Config is the `tls:` config section. Zero values mean the documented
// defaults.
type Config struct {
	// Certificates are certificate/key file pairs. The first is the
	// default for clients without SNI; others are chosen by SNI against
	// their DNS names (wildcards included). RSA and ECDSA certificates for
	// the same names may both be listed; the client's capabilities pick.
	Certificates []CertFile `yaml:"certificates"`
	// ACME obtains certificates automatically; nil disables it.
	ACME *ACME `yaml:"acme"`
	// SelfSigned generates a self-signed certificate at start-up for the
	// ACME domains, or "localhost", 127.0.0.1 and ::1. For demos and as a
	// last resort; clients will warn.
	SelfSigned bool `yaml:"self_signed"`
	// MinVersion is "1.2" (default) or "1.3".
	MinVersion string `yaml:"min_version"`
	// ClientCA is a PEM file of CAs that client certificates must chain
	// to; required unless ClientAuth is "none" or empty.
	ClientCA string `yaml:"client_ca"`
	// ClientAuth is "none" (default), "request" (verify if sent) or
	// "require".
	ClientAuth string `yaml:"client_auth"`
	// WatchInterval is how often certificate files are polled for
	// changes; default 30s.
	WatchInterval time.Duration `yaml:"watch_interval"`
	// SessionTicketRotation is how often ticket keys rotate; default 24h.
	SessionTicketRotation time.Duration `yaml:"session_ticket_rotation"`
}

// CertFile is one certificate and its private key.
type CertFile struct {
	// Cert is a PEM file: the leaf first, then intermediates (fullchain).
	Cert string `yaml:"cert"`
	// Key is a PEM private key: PKCS#1, PKCS#8, SEC 1, optionally
	// encrypted (legacy "Proc-Type: 4,ENCRYPTED" or PKCS#8 PBES2).
	Key string `yaml:"key"`
	// KeyPasswordFile holds the key's password (one line; a trailing
	// newline is ignored). Required when Key is encrypted.
	KeyPasswordFile string `yaml:"key_password_file"`
}

// ACME configures automatic certificates (RFC 8555) via autocert.
type ACME struct {
	// Domains is the explicit allowlist: certificates are requested for
	// these names only, never for whatever a client sends as SNI.
	Domains []string `yaml:"domains"`
	// Email is the account contact; the CA sends expiry warnings there.
	Email string `yaml:"email"`
	// CacheDir holds the account key and certificates (created 0700).
	CacheDir string `yaml:"cache_dir"`
	// DirectoryURL is the CA's directory; default Let's Encrypt
	// production.
	DirectoryURL string `yaml:"directory_url"`
	// DirectoryCA is an optional PEM file of roots to trust for the
	// directory's HTTPS, for a private CA; default system roots.
	DirectoryCA string `yaml:"directory_ca"`
	// Challenges lists "http-01" and/or "tls-alpn-01"; default both.
	Challenges []string `yaml:"challenges"`
	// HTTPAddress serves http-01 challenges; default ":80".
	HTTPAddress string `yaml:"http_address"`
	// TLSALPNAddress serves tls-alpn-01 challenges; default ":443".
	TLSALPNAddress string `yaml:"tls_alpn_address"`
	// RenewBefore: renew this long before expiry; 0 (default): a third
	// of each certificate's lifetime, at most MaxRenewBefore.
	RenewBefore time.Duration `yaml:"renew_before"`
	// Fallback is served until a certificate exists: "self-signed"
	// (default) or "files" (the first of Certificates).
	Fallback string `yaml:"fallback"`
	// PollInterval: how often the background loop picks up renewed
	// certificates and retries failed orders; default 1m.
	PollInterval time.Duration `yaml:"poll_interval"`
}

// withDefaults returns c with zero values replaced by defaults.
func (c Config) withDefaults() Config {
	if c.MinVersion == "" {
		c.MinVersion = "1.2"
	}
	if c.ClientAuth == "" {
		c.ClientAuth = "none"
	}
	if c.WatchInterval == 0 {
		c.WatchInterval = DefaultWatchInterval
	}
	if c.SessionTicketRotation == 0 {
		c.SessionTicketRotation = DefaultTicketRotation
	}
	if c.ACME != nil {
		a := *c.ACME
		if a.DirectoryURL == "" {
			a.DirectoryURL = LetsEncryptURL
		}
		if len(a.Challenges) == 0 {
			a.Challenges = []string{ChallengeHTTP01, ChallengeTLSALPN01}
		}
		if a.HTTPAddress == "" {
			a.HTTPAddress = ":80"
		}
		if a.TLSALPNAddress == "" {
			a.TLSALPNAddress = ":443"
		}
		if a.Fallback == "" {
			a.Fallback = "self-signed"
		}
		if a.PollInterval == 0 {
			a.PollInterval = DefaultPollInterval
		}
		a.Domains = slices.Clone(a.Domains)
		for i, d := range a.Domains {
			a.Domains[i] = normalizeName(d)
		}
		c.ACME = &a
	}
	return c
}

// Validate reports every problem in c at once, each with its key path
// under "tls.". It does not open files; New does.
func (c *Config) Validate() error {
	d := c.withDefaults()
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: tls.%s: %s", ErrConfig, key, fmt.Sprintf(format, args...)))
	}
	for i, cf := range d.Certificates {
		if cf.Cert == "" {
			bad(fmt.Sprintf("certificates[%d].cert", i), "missing")
		}
		if cf.Key == "" {
			bad(fmt.Sprintf("certificates[%d].key", i), "missing")
		}
	}
	if _, ok := tlsVersions[d.MinVersion]; !ok {
		bad("min_version", "%q: want \"1.2\" or \"1.3\"", d.MinVersion)
	}
	switch d.ClientAuth {
	case "none":
	case "request", "require":
		if d.ClientCA == "" {
			bad("client_ca", "required when client_auth is %q", d.ClientAuth)
		}
	default:
		bad("client_auth", "%q: want none, request or require", d.ClientAuth)
	}
	for key, v := range map[string]time.Duration{
		"watch_interval": d.WatchInterval, "session_ticket_rotation": d.SessionTicketRotation,
	} {
		if v < 0 {
			bad(key, "must be positive, got %s", v)
		}
	}
	if a := d.ACME; a != nil {
		if len(a.Domains) == 0 {
			bad("acme.domains", "at least one domain is required")
		}
		for i, dom := range a.Domains {
			if err := checkDomain(dom); err != nil {
				bad(fmt.Sprintf("acme.domains[%d]", i), "%v", err)
			}
		}
		if a.CacheDir == "" {
			bad("acme.cache_dir", "required: without it every restart orders new certificates and hits the CA's rate limits")
		}
		if a.Email != "" && (!strings.Contains(a.Email, "@") || strings.ContainsAny(a.Email, " \t\r\n")) {
			bad("acme.email", "%q is not an email address", a.Email)
		}
		if !strings.HasPrefix(a.DirectoryURL, "https://") {
			bad("acme.directory_url", "%q: must be an https:// URL", a.DirectoryURL)
		}
		for i, ch := range a.Challenges {
			if ch != ChallengeHTTP01 && ch != ChallengeTLSALPN01 {
				bad(fmt.Sprintf("acme.challenges[%d]", i), "%q: want http-01 or tls-alpn-01", ch)
			}
		}
		for key, addr := range map[string]string{"acme.http_address": a.HTTPAddress, "acme.tls_alpn_address": a.TLSALPNAddress} {
			if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
				bad(key, "%q: want host:port or :port", addr)
			}
		}
		if a.RenewBefore < 0 {
			bad("acme.renew_before", "must be positive, got %s", a.RenewBefore)
		}
		if a.PollInterval < 0 {
			bad("acme.poll_interval", "must be positive, got %s", a.PollInterval)
		}
		switch a.Fallback {
		case "self-signed":
		case "files":
			if len(d.Certificates) == 0 {
				bad("acme.fallback", "\"files\" needs at least one entry in tls.certificates")
			}
		default:
			bad("acme.fallback", "%q: want self-signed or files", a.Fallback)
		}
	}
	if len(d.Certificates) == 0 && d.ACME == nil && !d.SelfSigned {
		bad("certificates", "no certificate source: list certificates, configure acme or set self_signed")
	}
	return errors.Join(errs...)
}

// checkDomain rejects names ACME cannot issue for.
func checkDomain(d string) error {
	switch {
	case d == "":
		return errors.New("empty")
	case strings.HasPrefix(d, "*."):
		return errors.New("wildcards need dns-01, which mailgate does not do; list the names")
	case !strings.Contains(d, "."):
		return fmt.Errorf("%q: not a fully qualified name", d)
	case len(d) > 253:
		return errors.New("longer than 253 octets (RFC 1035 2.3.4)")
	}
	for _, r := range d {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '.') {
			return fmt.Errorf("%q: invalid character %q (use the punycode form)", d, r)
		}
	}
	return nil
}

// normalizeName lower-cases a DNS name and drops a trailing dot.
func normalizeName(s string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(s)), ".")
}
