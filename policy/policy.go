// Package policy decides whether a login may proceed from where it comes
// from: global allowed countries, the legacy per-user allow file
// (`user|CC`, `user|IP`), and a richer rules file. It is pure: no network.
//
// policy imports geo and nothing else of mailgate.
//
// # Model
//
// A decision walks these tiers in order; the first tier with a matching,
// unexpired rule decides (docs/policy.md has the same table):
//
//  1. always_deny  (config and rules file): networks, countries, labels
//  2. always_allow (config and rules file): networks
//  3. rules for the login itself, and its lines in the user file
//  4. rules for the login's domain ("@example.com")
//  5. rules for everyone ("*")
//  6. allow_countries: the global default list
//  7. otherwise deny
//
// Inside tiers 3 to 5 a matching deny beats a matching allow.
//
// # Implementation notes
//
// Files are parsed and compiled into an immutable snapshot (compiled) that
// Decide reads through an atomic pointer, so reloads never block decisions
// and a decision sees one consistent policy. Decide must stay allocation
// free: logins are lower-cased into a stack buffer and looked up with the
// m[string(b)] form the compiler does not allocate for; every Rule and
// Reason string is built at compile time.
package policy

import (
	"context"
	"errors"
	"fmt"
	"github.com/mailgate/mailgate/internal/errlist"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailgate/mailgate/geo"
)

// Protocol is the mail protocol of a login.
type Protocol string

// The protocols mailgate proxies. SMTP covers submission (587) and
// submissions (465) alike.
const (
	IMAP Protocol = "imap"
	POP3 Protocol = "pop3"
	SMTP Protocol = "smtp"
)

// Request is one login to decide.
type Request struct {
	Login    string
	Protocol Protocol
	Addr     netip.Addr
}

// Decision is the answer. Rule and Reason go to the log, never to the client.
type Decision struct {
	Allow bool
	// Rule names what decided: "file:line" or a config key path.
	Rule string
	// Reason is a short human text ("denied by a rule for this user").
	Reason string
	// Location is where the address was placed.
	Location geo.Location
}

// DefaultWatchInterval is how often Watch looks at the policy files when
// Config.WatchInterval is zero: short enough that a help-desk `mailgate
// allow` takes effect while the user is still on the phone.
const DefaultWatchInterval = 2 * time.Second

// Config is the `policy:` section of mailgate's config file.
type Config struct {
	// AllowCountries is the global default: ISO 3166-1 alpha-2 codes (or geo
	// labels such as "private") from which everyone may log in. Empty means
	// nobody is allowed by default; only rules and always_allow let logins in.
	AllowCountries []string `yaml:"allow_countries"`
	// DefaultDomain is appended to logins without "@" (in requests and in
	// both files), so "alice" and "alice@example.com" are one user. Empty
	// means logins are taken as they are.
	DefaultDomain string `yaml:"default_domain"`
	// UserFile is the legacy per-user allow file (`user|CC`, `user|IP`,
	// e.g. user-allowed.php). Empty means none.
	UserFile string `yaml:"user_file"`
	// RulesFile is the YAML rules file. Empty means none.
	RulesFile string `yaml:"rules_file"`
	// AlwaysAllow lists IPs or CIDRs from which every login is allowed
	// (office, VPN, monitoring), unless always_deny also matches.
	AlwaysAllow []string `yaml:"always_allow"`
	// AlwaysDeny lists IPs, CIDRs, country codes or labels from which every
	// login is denied, whatever else says.
	AlwaysDeny []string `yaml:"always_deny"`
	// WatchInterval is how often Watch checks the files for changes; zero
	// means DefaultWatchInterval, negative disables polling (SIGHUP still
	// reloads).
	WatchInterval time.Duration `yaml:"watch_interval"`
}

// Validate reports every problem in c at once, each with its key path.
func (c *Config) Validate() error {
	_, err := compileConfig(c)
	return err
}

// ErrInvalid marks every error about the content of a policy file or
// config section; the message names file:line or the key path.
var ErrInvalid = errors.New("invalid policy")

// Option changes how an Engine is built; for tests and tools.
type Option func(*Engine)

// WithClock sets the clock used to expire rules (default time.Now).
func WithClock(now func() time.Time) Option {
	return func(e *Engine) { e.now = now }
}

// Engine holds the compiled policy; safe for concurrent use; Reload swaps
// the compiled rules atomically.
type Engine struct {
	cfg Config
	loc geo.Locator
	log *slog.Logger
	now func() time.Time
	// cur is the policy in use; Decide only ever loads it.
	cur atomic.Pointer[compiled]
	// mu serialises Reload so two reloads never interleave their reads.
	mu sync.Mutex
}

// New loads and compiles the policy. loc places addresses. Every problem in
// the config and files is reported at once, each with file:line or key path.
func New(c Config, loc geo.Locator, log *slog.Logger, opts ...Option) (*Engine, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if loc == nil {
		return nil, errors.New("policy: no geo locator")
	}
	e := &Engine{cfg: c, loc: loc, log: log, now: time.Now}
	for _, o := range opts {
		o(e)
	}
	cp, err := e.load()
	if err != nil {
		return nil, err
	}
	e.cur.Store(cp)
	return e, nil
}

// load reads and compiles config and files into a fresh snapshot.
func (e *Engine) load() (*compiled, error) {
	return loadPolicy(&e.cfg, e.log)
}

// loadPolicy reads and compiles config and files; log gets the warnings
// for skipped user-file lines.
func loadPolicy(c *Config, log *slog.Logger) (*compiled, error) {
	// Stamp before reading: a write racing with the read is seen by Watch.
	st := stamps([]string{c.UserFile, c.RulesFile})
	cp, err := compileConfig(c)
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	if c.UserFile != "" {
		uf, err := readUserFile(c.UserFile)
		if err != nil {
			errs = append(errs, err)
		} else {
			for i, w := range uf.Warnings {
				if i == maxFileErrors {
					log.Warn("policy: more skipped lines in user file not logged; see mailgate policy check",
						"file", c.UserFile, "count", len(uf.Warnings)-i)
					break
				}
				log.Warn("policy: skipped line in user file", "file", c.UserFile, "line", w.Line, "problem", w.Msg)
			}
			if cp != nil {
				cp.addUserFile(uf, c.DefaultDomain)
			}
		}
	}
	if c.RulesFile != "" {
		rf, err := readRulesFile(c.RulesFile)
		if err != nil {
			errs = append(errs, err)
		} else if cp != nil {
			cp.addRulesFile(rf, c.DefaultDomain)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	cp.finish()
	cp.stamps = st
	return cp, nil
}

// Decide places r.Addr and decides. It never blocks and never allocates.
func (e *Engine) Decide(r Request) Decision {
	addr := r.Addr.Unmap().WithZone("")
	loc := e.loc.Lookup(addr)
	d := e.cur.Load().decide(r.Login, protoBit(r.Protocol), addr, loc.Code(), e.now)
	d.Location = loc
	return d
}

// Reload re-reads the policy files; on error the old policy stays and the
// returned error lists every problem (errors.Join, one per file:line).
func (e *Engine) Reload() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	cp, err := e.load()
	if err != nil {
		return err
	}
	e.cur.Store(cp)
	return nil
}

// Watch polls the policy files every Config.WatchInterval and reloads when
// one changes (size, mtime or a rename over it), until ctx ends. A failed
// reload is logged with every error and the old policy stays.
func (e *Engine) Watch(ctx context.Context) {
	iv := e.cfg.WatchInterval
	if iv == 0 {
		iv = DefaultWatchInterval
	}
	if iv < 0 || (e.cfg.UserFile == "" && e.cfg.RulesFile == "") {
		return
	}
	files := []string{e.cfg.UserFile, e.cfg.RulesFile}
	last := e.cur.Load().stamps
	t := time.NewTicker(iv)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := stamps(files)
		if now == last {
			continue
		}
		last = now
		if err := e.Reload(); err != nil {
			for _, err := range errlist.Split(err) {
				e.log.Error("policy: reload failed, keeping the old policy", "error", err)
			}
			continue
		}
		e.log.Info("policy: reloaded after a file change")
	}
}

// protoBit maps a protocol (any case) to its bit in a rule's protocol
// mask. Unknown protocols get no bit: allow rules limited to protocols do
// not match them, deny rules limited to protocols do.
func protoBit(p Protocol) uint8 {
	switch p {
	case IMAP, "IMAP":
		return 1
	case POP3, "POP3":
		return 2
	case SMTP, "SMTP":
		return 4
	}
	switch strings.ToLower(string(p)) { // rare mixed case; allocates
	case string(IMAP):
		return 1
	case string(POP3):
		return 2
	case string(SMTP):
		return 4
	}
	return 0
}

// parseProtocol accepts a protocol name in any case.
func parseProtocol(s string) (uint8, error) {
	b := protoBit(Protocol(strings.ToLower(strings.TrimSpace(s))))
	if b == 0 {
		return 0, fmt.Errorf("%q is not a protocol (imap, pop3, smtp)", s)
	}
	return b, nil
}

func protoNames(mask uint8) []string {
	var out []string
	for _, p := range []Protocol{IMAP, POP3, SMTP} {
		if mask&protoBit(p) != 0 {
			out = append(out, string(p))
		}
	}
	return out
}
