package tlsconf

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/acme/autocert"
)

// tlsVersions maps config values to crypto/tls constants. TLS 1.0 and 1.1
// are deprecated by RFC 8996 and cannot be configured.
var tlsVersions = map[string]uint16{"1.2": tls.VersionTLS12, "1.3": tls.VersionTLS13}

// modernSuites are the TLS 1.2 suites we offer: forward-secret ECDHE with
// AEAD ciphers only (no CBC, no RSA key exchange, no 3DES). TLS 1.3 suites
// are not configurable in Go and are all modern.
var modernSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// ticketKeysKept: the current ticket key plus two previous ones decrypt
// tickets, so a ticket survives at least two rotations.
const ticketKeysKept = 3

// expiryLogInterval: Run logs every certificate's expiry this often, so
// an admin without metrics still sees a certificate nobody renews.
const expiryLogInterval = 24 * time.Hour

// expiryWarning: certificates closer than this to expiry are logged at
// Warn instead of Info.
const expiryWarning = 14 * 24 * time.Hour

// Manager owns the certificates of every mail listener. Create it with
// New, hand ServerConfig results to the listeners, call Run in a goroutine
// and Reload on SIGHUP. Its methods are safe for concurrent use.
type Manager struct {
	cfg Config       // with defaults applied
	log *slog.Logger // never nil

	// set is what handshakes read; swapped whole on every change.
	set atomic.Pointer[certSet]

	// reloadMu serialises Reload.
	reloadMu sync.Mutex
	// mu guards the fields below and serialises publishing set.
	mu sync.Mutex
	// files holds the last good certificate of each cfg.Certificates
	// entry; a broken reload keeps the old one.
	files []*tls.Certificate
	// fileSig is the stat signature of each entry at the last reload
	// attempt, so a broken file is reported once, not every poll.
	fileSig []string
	// issued maps an ACME domain to its current certificate.
	issued map[string]*tls.Certificate
	// selfSigned is the generated certificate when cfg.SelfSigned.
	selfSigned *tls.Certificate
	// configs are the server configs handed out, for ticket rotation.
	configs []protoConfig
	// ticketMasters are random secrets, newest first; each protocol gets
	// its own keys derived from them.
	ticketMasters [][32]byte

	clientCAs *x509.CertPool    // nil unless client_ca
	acme      *autocert.Manager // nil unless cfg.ACME
	domains   map[string]bool   // ACME allowlist, normalised
	// inflight counts autocert calls, which take no context; Run waits
	// for them briefly so nothing writes the cache after it returns.
	inflight sync.WaitGroup
}

// protoConfig is one config handed out by ServerConfig.
type protoConfig struct {
	proto string
	cfg   *tls.Config
}

// New checks c, opens every configured file and returns a Manager ready
// to serve handshakes. An unreadable or mismatched file is an error
// naming the file. ACME issuance starts only with Run.
func New(c Config, log *slog.Logger) (*Manager, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Manager{cfg: c.withDefaults(), log: log, issued: map[string]*tls.Certificate{}}
	var errs []error
	for i, cf := range m.cfg.Certificates {
		cert, err := loadCertFile(cf)
		if err != nil {
			errs = append(errs, fmt.Errorf("tls.certificates[%d]: %w", i, err))
		}
		m.files = append(m.files, cert)
		m.fileSig = append(m.fileSig, statSig(cf))
	}
	if m.cfg.ClientCA != "" {
		pool, err := loadPool(m.cfg.ClientCA)
		if err != nil {
			errs = append(errs, fmt.Errorf("tls.client_ca: %w", err))
		}
		m.clientCAs = pool
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if m.cfg.SelfSigned || (m.cfg.ACME != nil && m.cfg.ACME.Fallback == "self-signed") {
		names := []string{"localhost", "127.0.0.1", "::1"}
		if m.cfg.ACME != nil {
			names = m.cfg.ACME.Domains
		}
		ss, err := selfSigned(names)
		if err != nil {
			return nil, fmt.Errorf("tlsconf: self-signed certificate: %w", err)
		}
		m.selfSigned = ss
	}
	if m.cfg.ACME != nil {
		if err := m.setupACME(); err != nil {
			return nil, err
		}
	}
	if err := m.rotateTicketKeys(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	m.publishLocked()
	m.mu.Unlock()
	for i, cert := range m.files {
		m.logExpiry("certificate loaded", cert, "file", m.cfg.Certificates[i].Cert)
	}
	return m, nil
}

// ServerConfig returns a new config for a mail listener speaking proto
// ("imap", "pop3" or "smtp"). It advertises only proto in ALPN: crypto/tls
// then refuses a client that offers ALPN without proto (for example only
// "http/1.1") with a no_application_protocol alert, and accepts a client
// that sends no ALPN, which is what mail clients do (RFC 7301 3.2; ALPACA,
// USENIX Security 2021). Every call for the same proto returns the same
// config, shared by all listeners of that protocol; callers must not
// modify it.
func (m *Manager) ServerConfig(proto string) *tls.Config {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, pc := range m.configs {
		if pc.proto == proto {
			return pc.cfg
		}
	}
	c := &tls.Config{
		MinVersion:     tlsVersions[m.cfg.MinVersion],
		CipherSuites:   modernSuites,
		NextProtos:     []string{proto},
		GetCertificate: m.getCertificate,
	}
	switch m.cfg.ClientAuth {
	case "request":
		c.ClientAuth, c.ClientCAs = tls.VerifyClientCertIfGiven, m.clientCAs
	case "require":
		c.ClientAuth, c.ClientCAs = tls.RequireAndVerifyClientCert, m.clientCAs
	}
	c.SetSessionTicketKeys(ticketKeys(m.ticketMasters, proto))
	m.configs = append(m.configs, protoConfig{proto, c})
	return c
}

// getCertificate serves handshakes from the current snapshot only: it
// never blocks on files or on the CA.
func (m *Manager) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	return m.set.Load().choose(hello)
}

// publishLocked builds and stores a new snapshot; m.mu must be held.
func (m *Manager) publishLocked() {
	var files []*tls.Certificate
	for _, c := range m.files {
		if c != nil {
			files = append(files, c)
		}
	}
	if len(files) == 0 && m.selfSigned != nil && m.cfg.ACME == nil {
		files = []*tls.Certificate{m.selfSigned}
	}
	s := newFileSet(files)
	if m.cfg.ACME != nil {
		fallback := []*tls.Certificate{m.selfSigned}
		if m.cfg.ACME.Fallback == "files" {
			fallback = s.def
		}
		issued := make(map[string]*tls.Certificate, len(m.issued))
		for k, v := range m.issued {
			issued[k] = v
		}
		s = s.withACME(m.cfg.ACME.Domains, m.domains, issued, fallback)
	}
	m.set.Store(s)
}

// Reload re-reads every certificate file. An entry whose new files are
// broken keeps its old certificate; the error names the file and is also
// logged. Sessions already established are never affected.
func (m *Manager) Reload() error {
	// Files are read outside mu (a PBKDF2 key may take a moment); only
	// one reload runs at a time.
	m.reloadMu.Lock()
	defer m.reloadMu.Unlock()
	type loaded struct {
		cert *tls.Certificate
		sig  string
		err  error
	}
	results := make([]loaded, len(m.cfg.Certificates))
	for i, cf := range m.cfg.Certificates {
		sig := statSig(cf)
		cert, err := loadCertFile(cf)
		if err != nil {
			err = fmt.Errorf("tls.certificates[%d]: %w", i, err)
		}
		results[i] = loaded{cert, sig, err}
	}
	var errs []error
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, r := range results {
		cf := m.cfg.Certificates[i]
		m.fileSig[i] = r.sig
		if r.err != nil {
			m.log.Error("certificate reload failed, keeping the old certificate", "file", cf.Cert, "err", r.err)
			errs = append(errs, r.err)
			continue
		}
		if old := m.files[i]; old == nil || !old.Leaf.Equal(r.cert.Leaf) {
			m.logExpiry("certificate reloaded", r.cert, "file", cf.Cert)
		}
		m.files[i] = r.cert
	}
	m.publishLocked()
	return errors.Join(errs...)
}

// Expiry returns the NotAfter time per DNS name served: for file
// certificates the soonest-expiring certificate carrying the name, for
// ACME domains the issued certificate (absent until issuance).
func (m *Manager) Expiry() map[string]time.Time {
	s := m.set.Load()
	out := map[string]time.Time{}
	add := func(name string, t time.Time) {
		if old, ok := out[name]; !ok || t.Before(old) {
			out[name] = t
		}
	}
	for name, cs := range s.exact {
		for _, c := range cs {
			add(name, c.Leaf.NotAfter)
		}
	}
	for suffix, cs := range s.wildcard {
		for _, c := range cs {
			add("*."+suffix, c.Leaf.NotAfter)
		}
	}
	for name, c := range s.acme {
		out[name] = c.Leaf.NotAfter
	}
	return out
}

// Run watches certificate files, rotates session ticket keys and, with
// ACME, serves the challenge ports and obtains and renews certificates,
// until ctx is cancelled. It returns an error only if a challenge
// listener cannot be opened.
func (m *Manager) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	stop := func() {}
	if m.cfg.ACME != nil {
		var err error
		stop, err = m.serveChallenges(ctx, &wg)
		if err != nil {
			return err
		}
		for _, d := range m.cfg.ACME.Domains {
			wg.Go(func() { m.acmeLoop(ctx, d) })
		}
	}
	if len(m.cfg.Certificates) > 0 {
		wg.Go(func() { m.every(ctx, m.cfg.WatchInterval, m.checkFiles) })
	}
	wg.Go(func() { m.every(ctx, expiryLogInterval, m.logAllExpiry) })
	wg.Go(func() {
		m.every(ctx, m.cfg.SessionTicketRotation, func() {
			if err := m.rotateTicketKeys(); err != nil {
				m.log.Error("session ticket key rotation failed", "err", err)
			}
		})
	})
	<-ctx.Done()
	stop()
	wg.Wait()
	done := make(chan struct{})
	go func() { m.inflight.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(acmeStopWait):
		m.log.Warn("acme: an order is still running at shutdown")
	}
	return nil
}

// every calls f each interval until ctx ends.
func (m *Manager) every(ctx context.Context, interval time.Duration, f func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f()
		}
	}
}

// checkFiles reloads when any certificate, key or password file changed
// size or mtime since the last attempt (certbot, lego and acme.sh replace
// files or symlinks; os.Stat follows the symlink).
func (m *Manager) checkFiles() {
	m.mu.Lock()
	changed := false
	for i, cf := range m.cfg.Certificates {
		if statSig(cf) != m.fileSig[i] {
			changed = true
		}
	}
	m.mu.Unlock()
	if changed {
		m.log.Info("certificate files changed, reloading")
		_ = m.Reload() // Reload logs each failure itself
	}
}

// statSig summarises the files of one entry; a missing file contributes
// its error, so its reappearance is a change too.
func statSig(cf CertFile) string {
	var b strings.Builder
	for _, p := range []string{cf.Cert, cf.Key, cf.KeyPasswordFile} {
		if p == "" {
			continue
		}
		st, err := os.Stat(p)
		if err != nil {
			fmt.Fprintf(&b, "%s:err;", p)
			continue
		}
		fmt.Fprintf(&b, "%s:%d:%d;", p, st.Size(), st.ModTime().UnixNano())
	}
	return b.String()
}

// rotateTicketKeys adds a fresh master secret and installs the derived
// keys on every handed-out config. Go's automatic rotation would do the
// same per config, but explicit keys let us bound the lifetime by config
// and keep protocols apart.
func (m *Manager) rotateTicketKeys() error {
	var k [32]byte
	if _, err := rand.Read(k[:]); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ticketMasters = append([][32]byte{k}, m.ticketMasters...)
	if len(m.ticketMasters) > ticketKeysKept {
		m.ticketMasters = m.ticketMasters[:ticketKeysKept]
	}
	for _, pc := range m.configs {
		pc.cfg.SetSessionTicketKeys(ticketKeys(m.ticketMasters, pc.proto))
	}
	return nil
}

// ticketKeys derives per-protocol keys, so a ticket issued on the IMAP
// listener cannot resume a session on the SMTP one (cross-protocol
// resumption is the session-level form of ALPACA).
func ticketKeys(masters [][32]byte, proto string) [][32]byte {
	out := make([][32]byte, len(masters))
	for i, mk := range masters {
		h := hmac.New(sha256.New, mk[:])
		h.Write([]byte("mailgate session ticket key " + proto))
		copy(out[i][:], h.Sum(nil))
	}
	return out
}

// logExpiry logs a certificate's names and expiry; Warn when close.
func (m *Manager) logExpiry(msg string, c *tls.Certificate, args ...any) {
	left := time.Until(c.Leaf.NotAfter)
	level := slog.LevelInfo
	if left < expiryWarning {
		level = slog.LevelWarn
	}
	args = append(args, "names", certNames(c.Leaf), "not_after", c.Leaf.NotAfter.UTC().Format(time.RFC3339),
		"days_left", int(left.Hours()/24), "serial", c.Leaf.SerialNumber.Text(16))
	m.log.Log(context.Background(), level, msg, args...)
}

// logAllExpiry logs the expiry of every certificate served.
func (m *Manager) logAllExpiry() {
	s := m.set.Load()
	seen := map[*tls.Certificate]bool{}
	for _, group := range [][]*tls.Certificate{s.def, s.fallback} {
		for _, c := range group {
			seen[c] = true
		}
	}
	for _, index := range []map[string][]*tls.Certificate{s.exact, s.wildcard} {
		for _, cs := range index {
			for _, c := range cs {
				seen[c] = true
			}
		}
	}
	for _, c := range s.acme {
		seen[c] = true
	}
	for c := range seen {
		if c != nil {
			m.logExpiry("certificate expiry", c)
		}
	}
}

// loadPool reads a PEM bundle of CA certificates.
func loadPool(path string) (*x509.CertPool, error) {
	b, err := readLimited(path, maxPEMFileSize)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCertificate, err)
	}
	certs, err := parseCertChainPEM(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrCertificate, path, err)
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, nil
}
