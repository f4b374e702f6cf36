// Package policy decides whether a login may proceed from where it comes
// from: global allowed countries, the legacy per-user allow file
// (`user|CC`, `user|IP`), and a richer rules file. It is pure: no network.
//
// policy imports geo and nothing else of mailgate.
package policy

import (
	"log/slog"
	"net/netip"

	"github.com/mailgate/mailgate/geo"
)

// Protocol is the mail protocol of a login.
type Protocol string

// The protocols mailgate proxies.
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
	// Reason is a short human text ("country RU not allowed for alice").
	Reason string
	// Location is where the address was placed.
	Location geo.Location
}

// Config is the `policy:` section of mailgate's config file.
type Config struct {
	AllowCountries []string `yaml:"allow_countries"`
	DefaultDomain  string   `yaml:"default_domain"`
	UserFile       string   `yaml:"user_file"`
	RulesFile      string   `yaml:"rules_file"`
}

// Validate reports every problem in c at once, each with its key path.
func (c *Config) Validate() error { panic("TODO") }

// Engine holds the compiled policy; safe for concurrent use; Reload swaps
// the compiled rules atomically.
type Engine struct{}

// New loads and compiles the policy. loc places addresses.
func New(c Config, loc geo.Locator, log *slog.Logger) (*Engine, error) { panic("TODO") }

// Decide places r.Addr and decides.
func (e *Engine) Decide(r Request) Decision { panic("TODO") }

// Reload re-reads the policy files; on error the old policy stays.
func (e *Engine) Reload() error { panic("TODO") }
