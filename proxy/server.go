package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mailgate/mailgate/guard"
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("proxy: server closed")

// Options configure a Server; Update swaps them at run time.
type Options struct {
	// Logger receives every log line; nil discards them.
	Logger *slog.Logger
	// Hostname is named in greetings; empty means "mailgate".
	Hostname string
	// Authorizer decides each login before any backend contact. Nil
	// refuses every login as unavailable (a wiring bug, logged).
	Authorizer Authorizer
	// IMAP, POP3 and SMTP log clients in to the backends. A nil backend
	// makes logins of that protocol fail as unavailable.
	IMAP IMAPBackend
	POP3 POP3Backend
	SMTP SMTPBackend
	// Limits bound every client; zero fields mean the defaults.
	Limits Limits
	// Metrics records Prometheus metrics; nil records nothing. Pass the
	// same value on every Update so counters survive reloads.
	Metrics *Metrics
	// Guard is the brute-force guard; nil: none. Pass the same value on
	// every Update (the guard reloads its own config): its bans and
	// counters belong to the process, not to one config.
	Guard *guard.Guard
	// Auditor records every login decision (audit.go); nil: none.
	Auditor Auditor
}

// Server accepts connections on any number of listeners and runs one
// session per connection. Its methods are safe for concurrent use.
type Server struct {
	opts atomic.Pointer[Options] // current snapshot; see Update

	baseCtx context.Context    // parent of every session's context
	cancel  context.CancelFunc // cancels baseCtx at Shutdown/Close
	closing atomic.Bool        // set once by Shutdown or Close

	mu        sync.Mutex
	listeners map[net.Listener]struct{} // open listeners, for closing
	conns     map[*conn]struct{}        // live sessions (the registry)

	panics atomic.Int64 // sessions ended by a recovered panic

	health healthTable // backends known down (health.go)
}

// NewServer returns a Server using o.
func NewServer(o Options) *Server {
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		baseCtx:   ctx,
		cancel:    cancel,
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*conn]struct{}),
	}
	s.Update(o)
	return s
}

// Update replaces the options. New connections and new login attempts on
// existing connections use o; sessions already spliced are unaffected,
// and a connection keeps the limits it started with.
func (s *Server) Update(o Options) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Hostname == "" {
		o.Hostname = "mailgate"
	}
	o.Limits = o.Limits.WithDefaults()
	s.opts.Store(&o)
}

// options returns the current snapshot.
func (s *Server) options() *Options { return s.opts.Load() }

// Sessions returns the number of open connections.
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Panics returns how many sessions ended in a recovered panic; each is
// logged with its stack. Anything but 0 is a bug.
func (s *Server) Panics() int64 { return s.panics.Load() }

// checkListener rejects a Listener the session code cannot serve.
func checkListener(l Listener) error {
	var errs []error
	if handlerFor(l.Protocol) == nil {
		errs = append(errs, fmt.Errorf("protocol %q not supported", l.Protocol))
	}
	switch l.TLS {
	case tlsImplicit, tlsStartTLS:
		if l.TLSConfig == nil {
			errs = append(errs, fmt.Errorf("tls %q needs a TLS config", l.TLS))
		}
	case tlsNone:
	default:
		errs = append(errs, fmt.Errorf("tls %q is not implicit, starttls or none", l.TLS))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("proxy: listener %q: %w", l.Name, err)
	}
	return nil
}

// Serve accepts connections on ln and serves each as l describes until
// Shutdown or Close, then returns ErrServerClosed. It closes ln.
func (s *Server) Serve(ln net.Listener, l Listener) error {
	if err := checkListener(l); err != nil {
		ln.Close()
		return err
	}
	// With a raw listener the guard sees a peer before a net.Conn exists
	// (accept_linux.go); ln stands for both descriptors from here on.
	raw := newRawListener(ln)
	if raw != nil {
		ln = raw
	}
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
		ln.Close()
	}()

	var backoff time.Duration // after temporary accept errors, as net/http
	var refused refusedSummary
	for {
		var (
			nc   net.Conn
			err  error
			gc   *guard.Conn
			peer netip.AddrPort // as the guard saw it (raw listener)
		)
		admitted := false // by the raw listener, which asked the guard
		if raw != nil && s.options().Guard != nil {
			nc, peer, err = raw.acceptAdmitted(func(ap netip.AddrPort) bool {
				var ok bool
				gc, ok = s.admit(ap, l, &refused)
				return ok
			})
			admitted = err == nil
		} else {
			nc, err = ln.Accept()
		}
		if err != nil {
			if gc != nil {
				// Admitted, then lost: net.FileConn failed (EMFILE on
				// its dup, say); the socket is closed, free its place.
				gc.Close()
			}
			if s.closing.Load() {
				return ErrServerClosed
			}
			if errors.Is(err, errRefusedBatch) {
				continue // a refusal flood: look at s.closing again
			}
			if errors.Is(err, errWrapAccepted) && !errors.Is(err, syscall.EMFILE) && !errors.Is(err, syscall.ENFILE) {
				// One socket lost (the peer reset it, the poller refused
				// it): the listener goes on.
				s.options().Logger.Warn("accepted connection lost", "listener", l.Name, "remote", peer.String(), "err", err)
				continue
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.options().Logger.Warn("accept failed; retrying", "listener", l.Name, "err", err, "backoff", backoff)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("proxy: accept on %q: %w", l.Name, err)
		}
		backoff = 0
		if !admitted {
			var ok bool
			if gc, ok = s.admit(addrPortOf(nc.RemoteAddr()), l, &refused); !ok {
				nc.Close()
				continue
			}
		}
		c := s.register(nc, l, peer)
		if c == nil {
			if gc != nil {
				gc.Close()
			}
			return ErrServerClosed
		}
		c.gconn = gc
		c.guardDone = gc != nil
		go c.serve()
	}
}

// Outcomes of the raw accept loop that do not end the listener.
var (
	// errRefusedBatch: a run of refused peers; the loop checks for
	// shutdown and accepts again.
	errRefusedBatch = errors.New("proxy: a batch of connections refused")
	// errWrapAccepted: an admitted socket could not become a net.Conn.
	errWrapAccepted = errors.New("proxy: wrapping an accepted socket")
)

// refusedLogInterval is how often at most a listener logs the summary of
// connections the guard refused at accept: a ban exists because a source
// hammers us, and a line per connection would make the log the cost.
const refusedLogInterval = time.Second

// refusedSummary counts one listener's accept-time refusals between log
// lines. Only the accept loop touches it.
type refusedSummary struct {
	count   int       // refusals since the last line
	last    string    // the latest refused address
	lastErr error     // the latest refusal
	logged  time.Time // when the last line was written
}

// admit asks the guard about a peer in the accept loop, before any
// session state exists, when the peer is the client (no PROXY header is
// expected from it). The caller closes a refused socket at once. gc is
// the connection's place in the guard's counts (nil when the guard was
// not asked here: no guard, or the PROXY header must be read first).
func (s *Server) admit(remote netip.AddrPort, l Listener, sum *refusedSummary) (gc *guard.Conn, ok bool) {
	o := s.options()
	if o.Guard == nil {
		return nil, true
	}
	if inPrefixes(remote.Addr(), l.ProxyFrom) {
		return nil, true
	}
	gc, err := o.Guard.Accept(remote.Addr())
	if err == nil {
		return gc, true
	}
	o.Metrics.refusedAtAccept(l)
	sum.count++
	sum.last = remote.Addr().String()
	sum.lastErr = err
	if now := time.Now(); now.Sub(sum.logged) >= refusedLogInterval {
		o.Logger.Info("connections refused by guard", "listener", l.Name, "count", sum.count,
			"last_remote", sum.last, "err", sum.lastErr)
		sum.count = 0
		sum.logged = now
	}
	return nil, false
}

// register creates and registers the session for nc, or closes nc and
// returns nil when the server is closing.
// remote is the peer address when the accept loop already has it (the
// raw listener's accept4), else the zero value: newConn then asks nc,
// which fails for a peer that reset in between.
func (s *Server) register(nc net.Conn, l Listener, remote netip.AddrPort) *conn {
	// Keep-alive is set here, on admitted sockets only, not by the
	// listener on every accepted one: cmd listens with keep-alive off so
	// a refusal at accept costs no setsockopt calls. It finds peers that
	// vanished during a long IDLE before the idle timeout does.
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: 5 * time.Minute, Interval: time.Minute, Count: 5})
	}
	c := newConn(s, nc, l, remote)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		nc.Close()
		return nil
	}
	s.conns[c] = struct{}{}
	return c
}

// unregister removes c from the registry; called once when c ends.
func (s *Server) unregister(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// stopAccepting marks the server closing and closes its listeners.
func (s *Server) stopAccepting() []*conn {
	s.mu.Lock()
	s.closing.Store(true)
	s.cancel()
	lns := make([]net.Listener, 0, len(s.listeners))
	for ln := range s.listeners {
		lns = append(lns, ln)
	}
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	// Outside the lock: closing a raw listener waits for its accept loop
	// to finish a batch, and sessions ending meanwhile need s.mu.
	for _, ln := range lns {
		ln.Close()
	}
	return conns
}

// shutdownPollInterval is how often Shutdown checks for finished
// sessions, as net/http does.
const shutdownPollInterval = 10 * time.Millisecond

// Shutdown stops accepting; sessions still logging in get the protocol's
// goodbye and close at once; spliced sessions may drain until ctx is
// done, then are closed. It returns nil when every session ended, else
// ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	for _, c := range s.stopAccepting() {
		c.interrupt()
	}
	t := time.NewTicker(shutdownPollInterval)
	defer t.Stop()
	for {
		if s.Sessions() == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			s.closeAll()
			return ctx.Err()
		case <-t.C:
			// Sessions that moved from login to splice after the first
			// pass were not interrupted; pre-auth ones still are.
			s.mu.Lock()
			for c := range s.conns {
				c.interrupt()
			}
			s.mu.Unlock()
		}
	}
}

// Close stops accepting and closes every session at once.
func (s *Server) Close() error {
	s.stopAccepting()
	s.closeAll()
	return nil
}

// closeAll closes every registered session's sockets; their goroutines
// then end on their own.
func (s *Server) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.forceClose()
	}
}
