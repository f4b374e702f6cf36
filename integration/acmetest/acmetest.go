// Package acmetest runs Pebble, Let's Encrypt's test ACME CA, in-process
// on loopback for tests that obtain certificates: its own CA, its ACME
// directory over HTTPS, and its validation authority (VA) resolving every
// name to 127.0.0.1 through a small loopback DNS server of ours, so the VA
// validates http-01 and tls-alpn-01 challenges against listeners on the
// test's chosen loopback ports.
//
// Users: tlsconf's package tests (with an in-process tlsconf.Manager) and
// the integration tests (with the real mailgate binary as a separate
// process, which reaches the directory through DirectoryURL and trusts its
// HTTPS through DirectoryCAFile).
//
// This package must not import anything of mailgate (but testport, which
// imports nothing of it): tlsconf's tests import it.
package acmetest

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
	"github.com/mailgate/mailgate/integration/testport"
	"github.com/miekg/dns"
)

// DefaultValidity is the lifetime of issued certificates unless
// Options.Validity says otherwise.
const DefaultValidity = 24 * time.Hour

// portAttempts bounds the search for a port free for both TCP and UDP
// (the DNS server binds both on one number).
const portAttempts = 20

// ErrOptions means Start was given options it cannot honour.
var ErrOptions = errors.New("acmetest: bad options")

// Options say how to run Pebble.
type Options struct {
	// HTTPPort is where the VA sends http-01 validation requests, on
	// 127.0.0.1; 0 picks one with testport.Take (outside the ephemeral
	// range, so nothing binding port 0 takes it before the client does).
	HTTPPort int
	// TLSPort is where the VA sends tls-alpn-01 validation handshakes,
	// on 127.0.0.1; 0 picks one as for HTTPPort.
	TLSPort int
	// Validity is the lifetime of issued certificates, in whole seconds
	// (Pebble's unit), at least one; 0 means DefaultValidity. Short
	// lifetimes let a test watch a renewal happen.
	Validity time.Duration
	// Dir is where DirectoryCAFile is written; it must exist. Empty: a new
	// temporary directory, removed by Stop.
	Dir string
	// Log receives Pebble's log lines; nil discards them.
	Log io.Writer
	// Held makes the ACME directory hold every request until Release, so
	// a test can look at a client's state before issuance (a fallback
	// certificate) without racing the order.
	Held bool
}

// Pebble is a running Pebble. Stop it when done.
type Pebble struct {
	// DirectoryURL is the ACME directory (RFC 8555 7.1.1), over HTTPS on
	// 127.0.0.1.
	DirectoryURL string
	// DirectoryCAFile is a PEM file with the certificate the directory's
	// HTTPS presents: what an ACME client must trust to talk to Pebble.
	// It does not sign issued certificates; RootPEM does.
	DirectoryCAFile string
	// HTTPPort and TLSPort are the loopback ports the VA validates http-01
	// and tls-alpn-01 challenges against.
	HTTPPort, TLSPort int
	// DNSAddr is the loopback DNS server the VA resolves names with (TCP
	// and UDP); it answers every A query with 127.0.0.1.
	DNSAddr string

	authority *ca.CAImpl // for RootPEM
	stops     []func()   // undo Start, in reverse order
	stopOnce  sync.Once

	holdMu sync.Mutex
	held   chan struct{} // while not nil, directory requests wait for it to close
}

// envMu serializes Start's change to the process environment: Pebble's
// parts read their switches from it only while being built.
var envMu sync.Mutex

// pebbleEnv are the switches Start sets while building Pebble, so tests
// are quick and deterministic whatever the caller's environment holds:
// no random validation delay of up to 5 s, no injected badNonce errors,
// always a real validation (never "always valid"), and no reuse of an
// earlier valid authorization, so every order (and every renewal) is
// validated through the challenge listener under test.
var pebbleEnv = map[string]string{
	"PEBBLE_VA_NOSLEEP":      "1",
	"PEBBLE_VA_ALWAYS_VALID": "0",
	"PEBBLE_WFE_NONCEREJECT": "0",
	"PEBBLE_AUTHZREUSE":      "0",
}

// Start runs Pebble on loopback. Every socket is bound before it returns,
// so a client may use DirectoryURL at once. On error nothing is left
// running.
func Start(opts Options) (p *Pebble, err error) {
	validity := opts.Validity
	if validity == 0 {
		validity = DefaultValidity
	}
	if validity < time.Second {
		return nil, fmt.Errorf("%w: validity %s is under Pebble's one-second unit", ErrOptions, opts.Validity)
	}
	for _, port := range []int{opts.HTTPPort, opts.TLSPort} {
		if port < 0 || port > 65535 {
			return nil, fmt.Errorf("%w: port %d out of range", ErrOptions, port)
		}
	}
	out := opts.Log
	if out == nil {
		out = io.Discard
	}
	plog := log.New(out, "pebble ", log.Lmicroseconds)

	p = &Pebble{HTTPPort: opts.HTTPPort, TLSPort: opts.TLSPort}
	if opts.Held {
		p.held = make(chan struct{})
	}
	defer func() {
		if err != nil {
			p.Stop()
			p = nil
		}
	}()
	// The challenge ports are bound later by the client under test (a
	// separate process, or a component configured by address), so they
	// cannot be handed over as listeners: they come from testport, outside
	// the ephemeral range, where the port-0 binds below (the DNS server,
	// the directory) and anywhere else cannot take them meanwhile.
	for _, port := range []*int{&p.HTTPPort, &p.TLSPort} {
		if *port == 0 {
			ports, err := testport.Take(1)
			if err != nil {
				return p, fmt.Errorf("acmetest: %w", err)
			}
			*port = ports[0]
		}
	}

	dir := opts.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "acmetest"); err != nil {
			return p, fmt.Errorf("acmetest: %w", err)
		}
		p.stops = append(p.stops, func() { os.RemoveAll(dir) })
	}

	if p.DNSAddr, err = p.startDNS(); err != nil {
		return p, err
	}

	store := db.NewMemoryStore()
	envMu.Lock()
	restore := setEnv(pebbleEnv)
	// Pebble generates its root and intermediate here; it panics only if
	// the key generation of crypto/rand fails.
	p.authority = ca.New(plog, store, "", "ecdsa", 0, 1, map[string]ca.Profile{
		"default": {Description: "acmetest", ValidityPeriod: uint64(validity / time.Second)},
	})
	validator := va.New(plog, p.HTTPPort, p.TLSPort, false, p.DNSAddr, store)
	front := wfe.New(plog, store, validator, p.authority, []string{"pebble.letsencrypt.org"}, false, false, 0, 0)
	restore()
	envMu.Unlock()

	// httptest binds 127.0.0.1 and serves with its own self-signed
	// certificate for that address, which DirectoryCAFile carries.
	api := httptest.NewUnstartedServer(p.gate(front.Handler()))
	api.Config.ErrorLog = plog
	api.StartTLS()
	// Close waits for requests in flight: let held ones through first.
	p.stops = append(p.stops, api.Close, p.Release)
	p.DirectoryURL = api.URL + wfe.DirectoryPath

	p.DirectoryCAFile = filepath.Join(dir, "pebble-directory-ca.pem")
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: api.Certificate().Raw})
	if err := os.WriteFile(p.DirectoryCAFile, caPEM, 0o644); err != nil {
		return p, fmt.Errorf("acmetest: %w", err)
	}
	return p, nil
}

// RootPEM returns the PEM of the root that issued certificates chain to
// (through one intermediate, which Pebble sends with each certificate).
// A client verifying a certificate from this Pebble trusts this root
// only.
func (p *Pebble) RootPEM() []byte {
	return p.authority.GetRootCert(0).PEM()
}

// Roots is RootPEM as a pool, for Go clients.
func (p *Pebble) Roots() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(p.RootPEM())
	return pool
}

// Release lets the directory's held requests (Options.Held) through, and
// all later ones. It is safe to call more than once.
func (p *Pebble) Release() {
	p.holdMu.Lock()
	defer p.holdMu.Unlock()
	if p.held != nil {
		close(p.held)
		p.held = nil
	}
}

// gate makes h wait while the directory is held.
func (p *Pebble) gate(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.holdMu.Lock()
		held := p.held
		p.holdMu.Unlock()
		if held != nil {
			select {
			case <-held:
			case <-r.Context().Done():
				// The client gave up (or the server is closing). Returning
				// would send an empty 200, which a client whose timeout
				// fires at this moment can still read as the answer:
				// close the connection without any.
				panic(http.ErrAbortHandler)
			}
		}
		h.ServeHTTP(w, r)
	})
}

// Stop shuts Pebble's servers down and removes the directory Start made.
// It is safe to call more than once.
func (p *Pebble) Stop() {
	p.stopOnce.Do(func() {
		for i := len(p.stops) - 1; i >= 0; i-- {
			p.stops[i]()
		}
	})
}

// startDNS serves A queries with 127.0.0.1 and everything else (AAAA,
// CAA) with an empty answer, on one port over TCP (which Pebble's VA
// uses) and UDP. Both sockets are bound before it returns, so the VA
// never races its start-up.
func (p *Pebble) startDNS() (string, error) {
	answer := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		r := new(dns.Msg)
		r.SetReply(q)
		for _, qq := range q.Question {
			if qq.Qtype == dns.TypeA {
				r.Answer = append(r.Answer, &dns.A{
					Hdr: dns.RR_Header{Name: qq.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
					A:   net.IPv4(127, 0, 0, 1),
				})
			}
		}
		w.WriteMsg(r)
	})
	for range portAttempts {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", fmt.Errorf("acmetest: dns: %w", err)
		}
		pc, err := net.ListenPacket("udp", ln.Addr().String())
		if err != nil {
			ln.Close() // UDP port taken: try another number
			continue
		}
		servers := []struct {
			srv  *dns.Server
			sock io.Closer
		}{
			{&dns.Server{Listener: ln, Handler: answer}, ln},
			{&dns.Server{PacketConn: pc, Handler: answer}, pc},
		}
		for _, s := range servers {
			done := make(chan struct{})
			go func() {
				defer close(done)
				s.srv.ActivateAndServe()
			}()
			p.stops = append(p.stops, func() {
				// Shutdown fails when the server has not started yet;
				// closing its socket stops it either way.
				if s.srv.Shutdown() != nil {
					s.sock.Close()
				}
				<-done
			})
		}
		return ln.Addr().String(), nil
	}
	return "", fmt.Errorf("acmetest: dns: no loopback port free for both TCP and UDP after %d tries", portAttempts)
}

// setEnv sets vars and returns a function restoring what was there.
func setEnv(vars map[string]string) (restore func()) {
	type prev struct {
		val string
		set bool
	}
	old := map[string]prev{}
	for k, v := range vars {
		val, set := os.LookupEnv(k)
		old[k] = prev{val, set}
		os.Setenv(k, v)
	}
	return func() {
		for k, o := range old {
			if o.set {
				os.Setenv(k, o.val)
			} else {
				os.Unsetenv(k)
			}
		}
	}
}
