package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"reflect"
	"slices"
	"time"

	"github.com/mailgate/mailgate/adapter/dovecot"
	"github.com/mailgate/mailgate/adapter/nginx"
	"github.com/mailgate/mailgate/audit"
	"github.com/mailgate/mailgate/backend"
	"github.com/mailgate/mailgate/geo"
	"github.com/mailgate/mailgate/guard"
	"github.com/mailgate/mailgate/internal/strictyaml"
	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/proxy"
	"github.com/mailgate/mailgate/tlsconf"
)

// defaultConfigPath is where serve and check-config look without -config.
const defaultConfigPath = "/etc/mailgate/mailgate.yaml"

// Config is mailgate's whole configuration file. Each package owns the
// type of its own section; docs/config.md lists every key.
type Config struct {
	// Hostname is the name in greetings and the SMTP EHLO to the backend.
	Hostname string `yaml:"hostname"`
	// DrainTimeout is how long spliced sessions may go on after SIGTERM.
	DrainTimeout time.Duration    `yaml:"drain_timeout"`
	Log          LogConfig        `yaml:"log"`
	Listeners    []ListenerConfig `yaml:"listeners"`
	Backends     BackendsConfig   `yaml:"backends"`
	TLS          tlsconf.Config   `yaml:"tls"`
	Geo          geo.Config       `yaml:"geo"`
	Policy       policy.Config    `yaml:"policy"`
	Limits       proxy.Limits     `yaml:"limits"`
	// Admin, Syslog and GeoUpdate are the operations sections
	// (opsconfig.go, docs/operations.md).
	Admin     AdminConfig     `yaml:"admin"`
	Syslog    SyslogConfig    `yaml:"syslog"`
	GeoUpdate GeoUpdateConfig `yaml:"geo_update"`
	// Guard is the brute-force guard (docs/bruteforce.md).
	Guard guard.Config `yaml:"guard"`
	// Audit is the login history (docs/audit.md).
	Audit audit.Config `yaml:"audit"`
	// Adapters are the HTTP servers other mail programs ask for decisions
	// (docs/nginx-adapter.md, docs/dovecot-policy.md); each is off by default.
	Adapters AdaptersConfig `yaml:"adapters"`
}

// AdaptersConfig is the `adapters:` section.
type AdaptersConfig struct {
	// Nginx answers nginx's mail auth_http (docs/nginx-adapter.md).
	Nginx nginx.Config `yaml:"nginx"`
	// Dovecot is Dovecot's auth_policy server (adapter/dovecot).
	Dovecot dovecot.Config `yaml:"dovecot"`
}

// LogConfig is the `log:` section.
type LogConfig struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // text or json
}

// ListenerConfig is one entry of `listeners:`.
type ListenerConfig struct {
	Name          string          `yaml:"name"`
	Protocol      string          `yaml:"protocol"` // imap, pop3, smtp
	Address       string          `yaml:"address"`  // host:port
	TLS           backend.TLSMode `yaml:"tls"`      // implicit, starttls, none
	ProxyFrom     []string        `yaml:"proxy_protocol_from"`
	PlaintextFrom []string        `yaml:"plaintext_from"`
}

// BackendsConfig is the `backends:` section: one server per protocol.
type BackendsConfig struct {
	IMAP *BackendConfig     `yaml:"imap"`
	POP3 *BackendConfig     `yaml:"pop3"`
	SMTP *SMTPBackendConfig `yaml:"smtp"`
}

// BackendConfig is one backend server and how its TLS is verified.
type BackendConfig struct {
	backend.Options `yaml:",inline"`
	// TLSVerify says how the backend's certificate is checked when tls is
	// implicit or starttls: system roots, a CA file, or a pinned hash.
	TLSVerify tlsconf.BackendTLS `yaml:"tls_verify"`
}

// SMTPBackendConfig adds the submission-only settings to a backend.
type SMTPBackendConfig struct {
	BackendConfig `yaml:",inline"`
	// Verify is how a password is checked before the splice: "imap" (an
	// IMAP login to backends.imap) or "smtp-auth" (AUTH PLAIN relayed to
	// this backend, which must offer AUTH) or "dovecot-auth" (Dovecot's
	// auth socket, dovecot_auth).
	Verify string `yaml:"verify"`
	// DovecotAuth is Dovecot's auth socket for verify: dovecot-auth.
	DovecotAuth string `yaml:"dovecot_auth"`
	// XCLIENT passes the client's address and login to Postfix.
	XCLIENT bool `yaml:"xclient"`
	// VerifyCacheTTL keeps successful imap-mode verifications this long.
	VerifyCacheTTL *time.Duration `yaml:"verify_cache_ttl"`
}

// defaultBackends are Dovecot and Postfix on the same host, told the
// client's real address (IMAP ID, POP3 and SMTP XCLIENT).
func defaultBackends() BackendsConfig {
	return BackendsConfig{
		IMAP: &BackendConfig{Options: backend.Options{Address: "127.0.0.1:143", ForwardClient: true}},
		POP3: &BackendConfig{Options: backend.Options{Address: "127.0.0.1:110", ForwardClient: true}},
		SMTP: &SMTPBackendConfig{
			BackendConfig: BackendConfig{Options: backend.Options{Address: "127.0.0.1:25", ForwardClient: true}},
			XCLIENT:       true,
		},
	}
}

// defaultListeners are used when the config names none: the standard
// ports of the issue, all with implicit TLS or STARTTLS.
func defaultListeners() []ListenerConfig {
	return []ListenerConfig{
		{Name: "imaps", Protocol: "imap", Address: ":993", TLS: backend.TLSImplicit},
		{Name: "pop3s", Protocol: "pop3", Address: ":995", TLS: backend.TLSImplicit},
		{Name: "smtps", Protocol: "smtp", Address: ":465", TLS: backend.TLSImplicit},
		{Name: "submission", Protocol: "smtp", Address: ":587", TLS: backend.TLSStartTLS},
	}
}

// commandFlags is the flag set every subcommand that reads the config
// starts from: errors are returned (not exited on) and go to stderr, and
// -config names the file.
func commandFlags(name string, stderr io.Writer) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs, fs.String("config", defaultConfigPath, "config file")
}

// loadConfig reads, decodes strictly, fills defaults and validates the
// file at path. Every problem is reported at once.
func loadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return parseConfig(data)
}

func parseConfig(data []byte) (*Config, error) {
	// Decode over the backend defaults, so a section that sets only the
	// address keeps forwarding the client's address (harmless where the
	// server ignores it) unless the admin turns it off.
	// The guard's defaults too: there a 0 in the file switches an action
	// off, so its defaults cannot be filled in after decoding.
	c := Config{Backends: defaultBackends(), Guard: guard.Defaults()}
	if err := decodeStrict(data, &c); err != nil {
		return nil, err
	}
	c.applyDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// decodeStrict decodes the config file into c: every unknown key and
// type problem at once, each with its key path and line; aliases and
// merge keys (<<) are followed (see internal/strictyaml).
func decodeStrict(data []byte, c *Config) error {
	err := strictyaml.Decode(data, c)
	var se *strictyaml.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("config: %w", err)
	}
	return err
}

func (c *Config) applyDefaults() {
	if c.Hostname == "" {
		c.Hostname, _ = os.Hostname()
		if c.Hostname == "" {
			c.Hostname = "localhost"
		}
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = 30 * time.Second
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "text"
	}
	if len(c.Listeners) == 0 {
		c.Listeners = defaultListeners()
	}
	for i := range c.Listeners {
		l := &c.Listeners[i]
		if l.Name == "" {
			l.Name = fmt.Sprintf("%s-%d", l.Protocol, i)
		}
		if l.TLS == "" {
			l.TLS = backend.TLSImplicit
		}
	}
	d := defaultBackends()
	if c.Backends.IMAP == nil {
		c.Backends.IMAP = d.IMAP
	}
	if c.Backends.POP3 == nil {
		c.Backends.POP3 = d.POP3
	}
	if c.Backends.SMTP == nil {
		c.Backends.SMTP = d.SMTP
	}
	if c.Backends.SMTP.Verify == "" {
		c.Backends.SMTP.Verify = "imap"
	}
	for _, b := range []*backend.Options{&c.Backends.IMAP.Options, &c.Backends.POP3.Options, &c.Backends.SMTP.Options} {
		if b.TLS == "" {
			b.TLS = backend.TLSNone
		}
	}
	c.Limits = c.Limits.WithDefaults()
	c.Adapters.Dovecot = c.Adapters.Dovecot.WithDefaults()
	c.applyOpsDefaults()
	// A config built in code (tests, the demo) has no guard section at
	// all; parseConfig starts from the defaults, so a file never gets here.
	if reflect.ValueOf(c.Guard).IsZero() {
		c.Guard = guard.Defaults()
	}
}

// Validate checks every section and returns all problems joined.
func (c *Config) Validate() error {
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	if d := c.DrainTimeout; d < 0 {
		add(fmt.Errorf("drain_timeout: must not be negative"))
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.Log.Level) {
		add(fmt.Errorf("log.level: %q is not one of debug, info, warn, error", c.Log.Level))
	}
	if !slices.Contains([]string{"text", "json"}, c.Log.Format) {
		add(fmt.Errorf("log.format: %q is not one of text, json", c.Log.Format))
	}
	names := map[string]bool{}
	addrs := map[string]bool{}
	for i, l := range c.Listeners {
		p := fmt.Sprintf("listeners[%d]", i)
		if names[l.Name] {
			add(fmt.Errorf("%s.name: %q is used twice", p, l.Name))
		}
		names[l.Name] = true
		if !slices.Contains([]string{"imap", "pop3", "smtp"}, l.Protocol) {
			add(fmt.Errorf("%s.protocol: %q is not one of imap, pop3, smtp", p, l.Protocol))
		}
		if !l.TLS.Valid() {
			add(fmt.Errorf("%s.tls: %q is not one of implicit, starttls, none", p, l.TLS))
		}
		if _, _, err := net.SplitHostPort(l.Address); err != nil {
			add(fmt.Errorf("%s.address: %q is not host:port: %v", p, l.Address, err))
		} else if addrs[l.Address] {
			add(fmt.Errorf("%s.address: %q is used twice", p, l.Address))
		}
		addrs[l.Address] = true
		_, err := geo.ParseNetworks(l.ProxyFrom, p+".proxy_protocol_from")
		add(err)
		_, err = geo.ParseNetworks(l.PlaintextFrom, p+".plaintext_from")
		add(err)
	}
	for path, b := range map[string]*BackendConfig{
		"backends.imap": c.Backends.IMAP, "backends.pop3": c.Backends.POP3, "backends.smtp": &c.Backends.SMTP.BackendConfig,
	} {
		add(b.Options.Validate(path))
		if b.Options.TLS != backend.TLSNone {
			add(b.TLSVerify.Validate(path + ".tls_verify"))
		}
	}
	add((&backend.SMTP{Opts: c.Backends.SMTP.Options, Verify: c.Backends.SMTP.Verify, DovecotAuth: c.Backends.SMTP.DovecotAuth,
		XCLIENT: c.Backends.SMTP.XCLIENT}).ValidateMode("backends.smtp"))
	if t := c.Backends.SMTP.VerifyCacheTTL; t != nil && *t < 0 {
		add(fmt.Errorf("backends.smtp.verify_cache_ttl: must not be negative"))
	}
	add(c.TLS.Validate())
	add(c.Geo.Validate())
	add(c.Policy.Validate())
	add(c.Limits.Validate())
	add(c.validateOps())
	add(c.Guard.Validate())
	add(c.Audit.Validate())
	add(c.validateNginxAdapter())
	add(c.Adapters.Dovecot.Validate("adapters.dovecot"))
	return errors.Join(errs...)
}
