package main

// Config sections for running mailgate in production: the admin HTTP
// listener, syslog lines for fail2ban and geo database updates.
// docs/operations.md documents every key; defaults live here.

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/mailgate/mailgate/cmd/mailgate/internal/geoupdate"
	"github.com/mailgate/mailgate/cmd/mailgate/internal/legacysyslog"
)

// AdminConfig is the `admin:` section: the HTTP listener for /metrics,
// /healthz and /readyz.
type AdminConfig struct {
	// Address is host:port; "off" disables the listener. Loopback by
	// default: metrics name countries and rules, not for the world.
	Address string `yaml:"address"`
	// TokenFile holds the bearer token mutating endpoints require (the
	// brute-force guard's); read-only endpoints need none. Empty: no
	// mutating endpoint is served. The file must not be readable by
	// others (mode o-rwx).
	TokenFile string `yaml:"token_file"`
	// AllowInsecure accepts, with a warning at start-up, what is refused
	// otherwise: a listener on a non-loopback address without a token
	// file, and a token file others may read.
	AllowInsecure bool `yaml:"allow_insecure"`
	// TLS serves the admin listener over TLS with the mail listeners'
	// certificates (tls:), so console passwords and cookies are not sent
	// in the clear.
	TLS bool `yaml:"tls"`
	// Console is the web console (docs/console.md).
	Console ConsoleConfig `yaml:"console"`
}

// ConsoleConfig is `admin.console:`: the web console on the admin
// listener. It is off until users_file is set.
type ConsoleConfig struct {
	// UsersFile holds the console accounts, user:role:bcrypt a line,
	// made by `mailgate admin passwd`. Empty: no console.
	UsersFile string `yaml:"users_file"`
	// IdleTimeout ends a console session after this long without a
	// request; 0: console.DefaultIdleTimeout.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
}

// defaultAdminAddress is where /metrics listens without config.
const defaultAdminAddress = "127.0.0.1:9100"

// SyslogConfig is the `syslog:` section: legacy auth_http lines
// (cmd/mailgate/internal/legacysyslog).
type SyslogConfig = legacysyslog.Config

// GeoUpdateConfig is the `geo_update:` section
// (cmd/mailgate/internal/geoupdate).
type GeoUpdateConfig = geoupdate.Config

// Syslog defaults.
const (
	defaultSyslogFacility = "LOCAL0"
	defaultSyslogTag      = "NGINXMAILAUTH"
)

func (c *Config) applyOpsDefaults() {
	if c.Admin.Address == "" {
		c.Admin.Address = defaultAdminAddress
	}
	if c.Syslog.Facility == "" {
		c.Syslog.Facility = defaultSyslogFacility
	}
	if c.Syslog.Tag == "" {
		c.Syslog.Tag = defaultSyslogTag
	}
	if c.Syslog.FailureSeverity == "" {
		c.Syslog.FailureSeverity = legacysyslog.SeverityInfo
	}
	c.GeoUpdate.ApplyDefaults()
}

func (c *Config) validateOps() error {
	var errs []error
	if a := c.Admin.Address; a != "off" {
		if _, _, err := net.SplitHostPort(a); err != nil {
			errs = append(errs, fmt.Errorf("admin.address: %q is not host:port or \"off\": %v", a, err))
		}
	}
	if t := c.Admin.Console.IdleTimeout; t != 0 && (t < time.Minute || t > 24*time.Hour) {
		errs = append(errs, fmt.Errorf("admin.console.idle_timeout: %v is not between 1m and 24h", t))
	}
	if c.Admin.TLS && !c.TLS.SelfSigned && len(c.TLS.Certificates) == 0 && c.TLS.ACME == nil {
		errs = append(errs, errors.New("admin.tls: needs a certificate: set tls.certificates, tls.acme or tls.self_signed"))
	}
	if !c.Admin.AllowInsecure {
		for _, p := range adminInsecurities(c.Admin) {
			errs = append(errs, fmt.Errorf("%s (admin.allow_insecure: true accepts it)", p))
		}
	}
	if c.Syslog.Enabled {
		if _, _, err := legacysyslog.ParseAddress(c.Syslog.Address); err != nil {
			errs = append(errs, fmt.Errorf("syslog.address: %w", err))
		}
	}
	if _, err := legacysyslog.ParseFacility(c.Syslog.Facility); err != nil {
		errs = append(errs, fmt.Errorf("syslog.facility: %w", err))
	}
	if strings.ContainsAny(c.Syslog.Tag, " :[]\r\n") || len(c.Syslog.Tag) > 48 {
		errs = append(errs, fmt.Errorf("syslog.tag: %q must be at most 48 characters without spaces, ':' or brackets", c.Syslog.Tag))
	}
	if s := c.Syslog.FailureSeverity; s != legacysyslog.SeverityInfo && s != legacysyslog.SeverityWarning {
		errs = append(errs, fmt.Errorf("syslog.failure_severity: %q is not one of info, warning", s))
	}
	u := c.GeoUpdate
	switch u.Provider {
	case "", "url", "ip2location", "maxmind":
	default:
		errs = append(errs, fmt.Errorf("geo_update.provider: %q is not one of ip2location, maxmind, url", u.Provider))
	}
	if u.Provider == "url" && u.URL == "" {
		errs = append(errs, errors.New("geo_update.url: needed for provider url"))
	}
	if u.URL != "" {
		if pu, err := url.Parse(u.URL); err != nil || (pu.Scheme != "https" && pu.Scheme != "http") || pu.Host == "" {
			errs = append(errs, fmt.Errorf("geo_update.url: %q is not an http(s) URL", u.URL))
		}
	}
	if u.MaxAge < 0 || u.Timeout < 0 || u.MaxSize < 0 {
		errs = append(errs, errors.New("geo_update: max_age, timeout and max_size must not be negative"))
	}
	return errors.Join(errs...)
}

// adminInsecurities lists what makes the admin listener reachable or its
// token readable beyond this host's administrators: a non-loopback
// address without a token, and a token file others may read. Each is an
// error unless admin.allow_insecure, then a warning at start-up.
func adminInsecurities(c AdminConfig) []string {
	var out []string
	if c.Address != "off" && c.TokenFile == "" && !isLoopbackHostPort(c.Address) {
		out = append(out, fmt.Sprintf("admin.address: %q is reachable from other hosts and admin.token_file is not set: "+
			"metrics, readiness and rule names are served to the network", c.Address))
	}
	if c.Address != "off" && c.Console.UsersFile != "" && !c.TLS && !isLoopbackHostPort(c.Address) {
		out = append(out, fmt.Sprintf("admin.address: %q is reachable from other hosts and the console is on without admin.tls: "+
			"console passwords and session cookies would cross the network in the clear", c.Address))
	}
	if c.Console.UsersFile != "" {
		if fi, err := os.Stat(c.Console.UsersFile); err == nil && fi.Mode().Perm()&0o007 != 0 {
			out = append(out, fmt.Sprintf("admin.console.users_file: %s is accessible to all users (mode %04o); its password hashes can be guessed at offline: chmod o-rwx it", c.Console.UsersFile, fi.Mode().Perm()))
		}
	}
	if c.TokenFile != "" {
		// A missing file is readAdminToken's error (serve, check-config).
		if fi, err := os.Stat(c.TokenFile); err == nil && fi.Mode().Perm()&0o007 != 0 {
			out = append(out, fmt.Sprintf("admin.token_file: %s is accessible to all users (mode %04o); chmod o-rwx it", c.TokenFile, fi.Mode().Perm()))
		}
	}
	return out
}

// isLoopbackHostPort reports whether host:port names only loopback: an
// IP literal in 127.0.0.0/8 or ::1, or "localhost". A wildcard ("",
// 0.0.0.0, ::) or any other name is not.
func isLoopbackHostPort(hp string) bool {
	host, _, err := net.SplitHostPort(hp)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}
