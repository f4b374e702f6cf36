package main

// Wiring of the legacy syslog lines for fail2ban
// (cmd/mailgate/internal/legacysyslog) into serve's logger and metrics.

import (
	"fmt"
	"io"
	"log/slog"

	"github.com/mailgate/mailgate/cmd/mailgate/internal/legacysyslog"
	"github.com/prometheus/client_golang/prometheus"
)

// newServeLogger is newLogger plus, when syslog.enabled, the legacy
// syslog lines. The returned func flushes and closes syslog.
func newServeLogger(cfg *Config, stderr io.Writer) (*slog.Logger, func(), error) {
	log := newLogger(cfg.Log, stderr)
	if !cfg.Syslog.Enabled {
		return log, func() {}, nil
	}
	sink, err := legacysyslog.Dial(cfg.Syslog, log.With("component", "syslog"))
	if err != nil {
		return nil, nil, fmt.Errorf("syslog: %w", err)
	}
	return slog.New(legacysyslog.NewHandler(log.Handler(), sink)), func() {
		_ = sink.Close()
		if n := sink.Dropped(); n > 0 {
			log.Warn("syslog: lines dropped because the syslog socket was too slow", "lines", n)
		}
		if n := sink.Lost(); n > 0 {
			log.Warn("syslog: lines dropped because the syslog socket was unreachable", "lines", n, "address", sink.Target())
		}
	}, nil
}

// registerSyslogMetrics registers the sink behind log, if any, on reg.
func registerSyslogMetrics(reg prometheus.Registerer, log *slog.Logger) {
	if h, ok := log.Handler().(*legacysyslog.Handler); ok {
		reg.MustRegister(h.Sink())
	}
}

// probeSyslog is check-config's test that serve's lines would reach the
// socket.
func probeSyslog(c SyslogConfig) error { return legacysyslog.Probe(c) }
