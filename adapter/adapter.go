// Package adapter holds what mailgate's HTTP adapters share: the servers
// that let a mail stack keep nginx's mail proxy (adapter/nginx, nginx's
// auth_http) or Dovecot (adapter/dovecot, Dovecot's auth_policy) in front
// and still ask mailgate's policy, guard and audit.
//
// Both are off by default. An adapter listens on loopback or a unix
// socket only (the program that calls it runs on the same host), and
// every request must carry the shared secret in a header, compared in
// constant time; a request without it is refused (nginx's gets 401,
// Dovecot's a policy refusal, each as its caller reads a "no") and
// logged at most once per RefusalLogInterval. The secret in force is
// held by Secrets, which a reload replaces when the file changed.
package adapter

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// HTTP server limits: the callers, on this host, send one small request
// per login at once, so a request that takes longer to arrive is not
// theirs and must not hold a connection and a goroutine.
const (
	// readHeaderTimeout bounds the request line and headers.
	readHeaderTimeout = 2 * time.Second
	// readTimeout bounds the whole request, body included (Dovecot's
	// body is a few hundred octets, nginx's none).
	readTimeout = 5 * time.Second
	idleTimeout = 60 * time.Second
	// maxHeaderBytes: nginx's longest headers (a 320-octet login and a
	// 1024-octet password, each URL-escaped, and the others) stay well
	// under it; Dovecot sends a few short headers.
	maxHeaderBytes = 8 << 10
	// MinSecretLen: a shorter secret is refused at start.
	MinSecretLen = 16
	// RefusalLogInterval bounds the WARN lines for requests without the
	// secret, so a misconfigured caller cannot flood the log.
	RefusalLogInterval = time.Minute
)

// Config is one adapter's listener, the same keys for every adapter.
type Config struct {
	// Listen is "host:port" on a loopback address, or "unix:/path" for a
	// unix socket (created mode 0660; a stale socket file is replaced).
	// "" leaves the adapter off.
	Listen string `yaml:"listen"`
	// SecretFile holds the shared secret the caller sends (at least
	// MinSecretLen characters; surrounding space trimmed).
	SecretFile string `yaml:"secret_file"`
}

// Enabled reports whether the adapter is configured to listen.
func (c Config) Enabled() bool { return c.Listen != "" }

// Validate checks the listen address (loopback or unix socket) and that
// a secret file is named; key is the config path for messages, such as
// "adapters.nginx".
func (c Config) Validate(key string) error {
	if !c.Enabled() {
		return nil
	}
	var errs []error
	if path, ok := strings.CutPrefix(c.Listen, "unix:"); ok {
		if path == "" {
			errs = append(errs, fmt.Errorf("%s.listen: unix: needs a socket path", key))
		}
	} else if ap, err := netip.ParseAddrPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("%s.listen: %q is neither host:port with an IP literal nor unix:/path", key, c.Listen))
	} else if !ap.Addr().IsLoopback() {
		errs = append(errs, fmt.Errorf("%s.listen: %s is not a loopback address; the adapter answers only callers on this host (use a unix socket or 127.0.0.1)", key, ap.Addr()))
	}
	if c.SecretFile == "" {
		errs = append(errs, fmt.Errorf("%s.secret_file: required when %s.listen is set", key, key))
	}
	return errors.Join(errs...)
}

// ReadSecret reads the secret file; key names the config path for
// messages.
func ReadSecret(key, file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("%s.secret_file: %w", key, err)
	}
	s := strings.TrimSpace(string(b))
	if len(s) < MinSecretLen {
		return "", fmt.Errorf("%s.secret_file: the secret must be at least %d characters", key, MinSecretLen)
	}
	if strings.ContainsAny(s, "\r\n\x00") {
		return "", fmt.Errorf("%s.secret_file: the secret must be one line", key)
	}
	return s, nil
}

// Listen opens the listener c.Listen names.
func Listen(ctx context.Context, c Config) (net.Listener, error) {
	path, unix := strings.CutPrefix(c.Listen, "unix:")
	if !unix {
		return (&net.ListenConfig{}).Listen(ctx, "tcp", c.Listen)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, err
		}
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// Serve serves h on ln until ctx ends, then shuts down, giving requests
// in flight up to grace to finish.
func Serve(ctx context.Context, ln net.Listener, h http.Handler, log *slog.Logger, grace time.Duration) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), grace)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	err := srv.Serve(ln)
	<-done
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// LogLimit lets a kind of WARN line through at most once per
// RefusalLogInterval, so a misconfigured or hostile caller cannot flood
// the log; the lines it held back are counted on the next one. The zero
// value is ready. Safe for concurrent use.
type LogLimit struct {
	mu      sync.Mutex
	logged  time.Time
	quieted int
}

// Take reports whether a line may be logged now and, if so, how many
// were held back since the last one.
func (l *LogLimit) Take() (ok bool, quieted int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if !l.logged.IsZero() && now.Sub(l.logged) < RefusalLogInterval {
		l.quieted++
		return false, 0
	}
	quieted = l.quieted
	l.logged, l.quieted = now, 0
	return true, quieted
}

// Secret guards a handler with a shared secret sent in a header.
type Secret struct {
	header string
	sum    [32]byte
	log    *slog.Logger
	limit  *LogLimit
}

// NewSecret returns the check for secret sent in header.
func NewSecret(header, secret string, log *slog.Logger) *Secret {
	return &Secret{header: header, sum: sha256.Sum256([]byte(secret)), log: log, limit: &LogLimit{}}
}

// OK reports whether r carries the secret. The hashes are compared, in
// constant time whatever the lengths.
func (s *Secret) OK(r *http.Request) bool {
	vals := r.Header.Values(s.header)
	if len(vals) != 1 {
		return false
	}
	got := sha256.Sum256([]byte(vals[0]))
	return subtle.ConstantTimeCompare(got[:], s.sum[:]) == 1
}

// Protect answers 401 to a request without the secret and passes the
// others to h.
func (s *Secret) Protect(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.OK(r) {
			s.Refuse(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// Refuse answers 401 to r, which lacks the secret, and logs it (at most
// once per RefusalLogInterval).
func (s *Secret) Refuse(w http.ResponseWriter, r *http.Request) {
	s.LogRefusal(r)
	http.Error(w, "missing or wrong secret", http.StatusUnauthorized)
}

// LogRefusal logs that r lacks the secret, at most once per
// RefusalLogInterval, for a caller that answers r itself.
func (s *Secret) LogRefusal(r *http.Request) {
	ok, quiet := s.limit.Take()
	if !ok {
		return
	}
	s.log.Warn("adapter request refused: missing or wrong secret", "header", s.header,
		"path", r.URL.EscapedPath(), "remote", r.RemoteAddr, "not_logged_before", quiet)
}

// Secrets holds the secret an adapter checks, which a reload replaces
// when secret_file holds another one (a rotation). Safe for concurrent
// use.
type Secrets struct {
	header string
	log    *slog.Logger
	limit  *LogLimit // one for every secret in turn: a rotation is no reason for more lines
	cur    atomic.Pointer[Secret]
}

// NewSecrets returns the holder of secret, sent in header.
func NewSecrets(header, secret string, log *slog.Logger) *Secrets {
	s := &Secrets{header: header, log: log, limit: &LogLimit{}}
	s.Set(secret)
	return s
}

// Current is the secret in force.
func (s *Secrets) Current() *Secret { return s.cur.Load() }

// Set puts secret in force and reports whether it differs from the one
// before. Requests already checked are not affected.
func (s *Secrets) Set(secret string) (changed bool) {
	n := &Secret{header: s.header, sum: sha256.Sum256([]byte(secret)), log: s.log, limit: s.limit}
	if old := s.cur.Load(); old != nil && old.sum == n.sum {
		return false
	}
	s.cur.Store(n)
	return true
}
