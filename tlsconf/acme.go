package tlsconf

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
)

// Bounds for the challenge servers, which face the whole internet and
// only ever answer the CA's validation requests.
const (
	// challengeTimeout bounds one challenge request or handshake; CAs
	// validate within seconds (RFC 8555 8.3 and RFC 8737 3).
	challengeTimeout = 10 * time.Second
	// challengeMaxHeader: a validation request is a bare GET.
	challengeMaxHeader = 8 << 10
	// acmeMaxBackoff caps the wait between failed orders; with
	// Let's Encrypt's failed-validation limit (5 per hour per name) an
	// hour keeps a broken setup from locking itself out for long.
	acmeMaxBackoff = time.Hour
	// acmeOrderTimeout bounds one issuance attempt as seen by our loop;
	// autocert itself allows 5 minutes.
	acmeOrderTimeout = 6 * time.Minute
	// acmeStopWait: how long Run waits at shutdown for an order in
	// flight to finish writing the cache.
	acmeStopWait = 10 * time.Second
)

// setupACME builds the autocert manager. Called from New.
func (m *Manager) setupACME() error {
	a := m.cfg.ACME
	client := &acme.Client{DirectoryURL: a.DirectoryURL, UserAgent: "mailgate"}
	if a.DirectoryCA != "" {
		pool, err := loadPool(a.DirectoryCA)
		if err != nil {
			return fmt.Errorf("tls.acme.directory_ca: %w", err)
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		client.HTTPClient = &http.Client{Transport: tr, Timeout: time.Minute}
	}
	m.domains = map[string]bool{}
	for _, d := range a.Domains {
		m.domains[d] = true
	}
	m.acme = &autocert.Manager{
		Prompt:      autocert.AcceptTOS,
		HostPolicy:  autocert.HostWhitelist(a.Domains...),
		Cache:       autocert.DirCache(a.CacheDir),
		Client:      client,
		Email:       a.Email,
		RenewBefore: a.RenewBefore,
	}
	return nil
}

func (m *Manager) wantChallenge(name string) bool {
	for _, c := range m.cfg.ACME.Challenges {
		if c == name {
			return true
		}
	}
	return false
}

// serveChallenges opens the configured challenge listeners. Both serve
// challenges only: the HTTP server answers 404 to anything but
// /.well-known/acme-challenge/, the TLS server refuses any handshake that
// is not a tls-alpn-01 validation (RFC 8737 3), so port 443 never starts
// an issuance on behalf of a random client.
func (m *Manager) serveChallenges(ctx context.Context, wg *sync.WaitGroup) (stop func(), err error) {
	a := m.cfg.ACME
	var closers []func()
	stop = func() {
		for _, c := range closers {
			c()
		}
	}
	if m.wantChallenge(ChallengeHTTP01) {
		// HTTPHandler also tells autocert that http-01 may be tried.
		h := stripHostPort(m.acme.HTTPHandler(http.NotFoundHandler()))
		ln, err := net.Listen("tcp", a.HTTPAddress)
		if err != nil {
			return stop, fmt.Errorf("tlsconf: http-01 listener tls.acme.http_address: %w", err)
		}
		srv := &http.Server{
			Handler:           h,
			ReadHeaderTimeout: challengeTimeout,
			ReadTimeout:       challengeTimeout,
			WriteTimeout:      challengeTimeout,
			IdleTimeout:       challengeTimeout,
			MaxHeaderBytes:    challengeMaxHeader,
			ErrorLog:          nil,
		}
		closers = append(closers, func() { srv.Close() })
		wg.Go(func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				m.log.Error("http-01 challenge server stopped", "err", err)
			}
		})
		m.log.Info("serving ACME http-01 challenges", "addr", ln.Addr().String())
	}
	if m.wantChallenge(ChallengeTLSALPN01) {
		ln, err := net.Listen("tcp", a.TLSALPNAddress)
		if err != nil {
			stop()
			return func() {}, fmt.Errorf("tlsconf: tls-alpn-01 listener tls.acme.tls_alpn_address: %w", err)
		}
		closers = append(closers, func() { ln.Close() })
		cfg := &tls.Config{
			MinVersion: tls.VersionTLS12,
			NextProtos: []string{acme.ALPNProto},
			GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
				if len(hello.SupportedProtos) != 1 || hello.SupportedProtos[0] != acme.ALPNProto {
					return nil, errors.New("tlsconf: this port serves ACME tls-alpn-01 validation only")
				}
				return m.acme.GetCertificate(hello)
			},
		}
		wg.Go(func() { m.serveALPN(ctx, ln, cfg) })
		m.log.Info("serving ACME tls-alpn-01 challenges", "addr", ln.Addr().String())
	}
	return stop, nil
}

// serveALPN completes tls-alpn-01 handshakes and closes each connection:
// the validation is the handshake itself (RFC 8737 3).
func (m *Manager) serveALPN(ctx context.Context, ln net.Listener, cfg *tls.Config) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() == nil {
				m.log.Error("tls-alpn-01 challenge listener stopped", "err", err)
			}
			return
		}
		go func() {
			defer c.Close()
			hctx, cancel := context.WithTimeout(ctx, challengeTimeout)
			defer cancel()
			if err := c.SetDeadline(time.Now().Add(challengeTimeout)); err != nil {
				return
			}
			if err := tls.Server(c, cfg).HandshakeContext(hctx); err != nil {
				m.log.Debug("tls-alpn-01 handshake failed", "remote", c.RemoteAddr().String(), "err", err)
			}
		}()
	}
}

// acmeLoop keeps one domain's certificate current. autocert obtains the
// certificate on the first call and then renews it on its own timer
// RenewBefore ahead of expiry; each poll picks up what it holds (a map
// lookup once issued) and publishes a changed certificate. Failures are
// retried with backoff. Handshakes never wait on any of this.
func (m *Manager) acmeLoop(ctx context.Context, domain string) {
	a := m.cfg.ACME
	wait := time.Duration(0)
	backoff := a.PollInterval
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		cert, err := m.acmeGet(ctx, domain)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			m.log.Warn("acme: no certificate yet, serving the fallback", "domain", domain, "err", err, "retry_in", backoff.String())
			wait = backoff
			backoff = min(backoff*2, acmeMaxBackoff)
			continue
		}
		wait, backoff = a.PollInterval, a.PollInterval
		m.storeIssued(domain, cert)
	}
}

// acmeGet asks autocert for domain's certificate as an ECDSA-capable
// client would, without tying our loop to autocert's own timeout.
func (m *Manager) acmeGet(ctx context.Context, domain string) (*tls.Certificate, error) {
	type result struct {
		c   *tls.Certificate
		err error
	}
	ch := make(chan result, 1)
	m.inflight.Go(func() {
		c, err := m.acme.GetCertificate(&tls.ClientHelloInfo{
			ServerName:       domain,
			SignatureSchemes: []tls.SignatureScheme{tls.ECDSAWithP256AndSHA256},
			SupportedCurves:  []tls.CurveID{tls.CurveP256},
			CipherSuites:     []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256},
		})
		ch <- result{c, err}
	})
	t := time.NewTimer(acmeOrderTimeout)
	defer t.Stop()
	select {
	case r := <-ch:
		return r.c, r.err
	case <-t.C:
		return nil, errors.New("acme: order timed out")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// storeIssued publishes cert for domain when it differs from the current
// one, and warns when autocert's renewal is overdue.
func (m *Manager) storeIssued(domain string, cert *tls.Certificate) {
	if cert.Leaf == nil {
		leaf, err := x509Leaf(cert)
		if err != nil {
			m.log.Error("acme: unparsable certificate", "domain", domain, "err", err)
			return
		}
		cert.Leaf = leaf
	}
	m.mu.Lock()
	old := m.issued[domain]
	changed := old == nil || !old.Leaf.Equal(cert.Leaf)
	if changed {
		m.issued[domain] = cert
		m.publishLocked()
	}
	m.mu.Unlock()
	switch {
	case old == nil:
		m.logExpiry("acme: certificate obtained", cert, "domain", domain)
	case changed:
		m.logExpiry("acme: certificate renewed", cert, "domain", domain, "old_serial", old.Leaf.SerialNumber.Text(16))
	}
	// When autocert renews, as it computes it: renew_before, or unset a
	// third of the lifetime; at most 30 days.
	life := cert.Leaf.NotAfter.Sub(cert.Leaf.NotBefore)
	renewBefore := min(life/3, MaxRenewBefore)
	if set := m.cfg.ACME.RenewBefore; set > 0 {
		renewBefore = min(set, MaxRenewBefore)
	}
	// A set renew_before that reaches back past the issuance of a fresh
	// certificate makes it due at once, every time: the renewals run back
	// to back into the CA's rate limits. The lifetime is only known now
	// and autocert cannot change the setting while it runs, so tell the
	// admin what to write (or to remove the line).
	if changed && m.cfg.ACME.RenewBefore > 0 && time.Until(cert.Leaf.NotAfter) <= renewBefore {
		m.log.Error("acme: tls.acme.renew_before is not shorter than the certificate's lifetime; renewals will run back to back",
			"domain", domain, "lifetime", life.Round(time.Second).String(), "renew_before", renewBefore.String(),
			"set_renew_before_to", (life / 3).Round(time.Second).String())
	}
	// autocert retries failed renewals itself without telling anyone;
	// say so once the certificate is well inside its renewal window.
	if left := time.Until(cert.Leaf.NotAfter); left < renewBefore/2 {
		m.logExpiry("acme: renewal overdue, CA unreachable or validation failing?", cert, "domain", domain)
	}
}

// stripHostPort drops a port from the Host header: autocert checks Host
// against the allowlist as is, so "mail.example.org:80" (legal per RFC
// 9110 7.2) or a non-default port behind a port forward would fail
// validation.
func stripHostPort(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if host, _, err := net.SplitHostPort(r.Host); err == nil {
			r.Host = host
		}
		h.ServeHTTP(w, r)
	})
}
