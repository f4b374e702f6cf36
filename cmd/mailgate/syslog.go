package main

// Legacy syslog lines for fail2ban.
//
// The nginx auth_http PHP script mailgate replaces logged one line per
// login to syslog (facility LOCAL0, tag NGINXMAILAUTH):
//
//	<user> : COUNTRYFAILED|<proto> <ip>|<CC>|<Country>
//
// and likewise AUTHFAILED and AUTHPASS. Existing fail2ban jails match
// those lines, so syslogHandler wraps the normal slog handler and, for the
// login decision records (and the guard's BANNED and LOCKED), also sends
// that line. The proxy never puts a password in a record, and the line is
// built only from the named fields below.
//
// Implementation notes: the user name is the client's text. A name such
// as "x : AUTHFAILED|imap 192.0.2.1|" could make a loose filter ban an
// innocent address, so every field is made one token of printable ASCII
// before it is written: spaces, '|' and controls become '?', other
// non-ASCII runes are escaped, as Python's \S (fail2ban) would not treat
// a Unicode space as part of a token (the country name keeps its spaces:
// it comes from the database and is last on the line). Lines go through a
// bounded queue to one writer goroutine: a stuck syslog daemon must not
// stall logins; lines that do not fit are dropped and counted. A missing
// or failing socket does not stop mailgate either (see syslogSink).

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"log/syslog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
)

// syslogQueue bounds the lines waiting for the syslog socket: a few
// seconds of a brute-force flood; beyond that lines are dropped.
const syslogQueue = 4096

// syslogFlushTimeout bounds the wait for queued lines at exit.
const syslogFlushTimeout = 2 * time.Second

// legacyEvents are the messages that get a legacy line.
var legacyEvents = map[string]bool{
	"AUTHPASS": true, "AUTHFAILED": true, "COUNTRYFAILED": true,
	"BANNED": true, "LOCKED": true,
}

// syslogTarget splits syslog.address into log/syslog's network and
// address; ("", "") is the local socket.
func syslogTarget(addr string) (network, raddr string, err error) {
	if addr == "" {
		return "", "", nil
	}
	for _, n := range []string{"udp", "tcp", "unixgram", "unix"} {
		if rest, ok := strings.CutPrefix(addr, n+":"); ok {
			if rest == "" {
				return "", "", fmt.Errorf("%q names no address", addr)
			}
			return n, rest, nil
		}
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return "", "", fmt.Errorf("%q is not host:port, udp:host:port, tcp:host:port or unix(gram):/path", addr)
	}
	return "udp", addr, nil
}

// syslogFacility maps a facility name to its priority bits.
func syslogFacility(name string) (syslog.Priority, error) {
	f, ok := map[string]syslog.Priority{
		"KERN": syslog.LOG_KERN, "USER": syslog.LOG_USER, "MAIL": syslog.LOG_MAIL,
		"DAEMON": syslog.LOG_DAEMON, "AUTH": syslog.LOG_AUTH, "AUTHPRIV": syslog.LOG_AUTHPRIV,
		"LOCAL0": syslog.LOG_LOCAL0, "LOCAL1": syslog.LOG_LOCAL1, "LOCAL2": syslog.LOG_LOCAL2,
		"LOCAL3": syslog.LOG_LOCAL3, "LOCAL4": syslog.LOG_LOCAL4, "LOCAL5": syslog.LOG_LOCAL5,
		"LOCAL6": syslog.LOG_LOCAL6, "LOCAL7": syslog.LOG_LOCAL7,
	}[strings.ToUpper(name)]
	if !ok {
		return 0, fmt.Errorf("%q is not a syslog facility (LOCAL0..LOCAL7, MAIL, AUTH, AUTHPRIV, DAEMON, USER)", name)
	}
	return f, nil
}

// syslogLine is one queued legacy line.
type syslogLine struct {
	warn bool // LOG_WARNING, else LOG_INFO
	text string
}

// Values of syslog.failure_severity.
const (
	severityInfo    = "info"    // the PHP script's syslog(LOG_INFO, ...)
	severityWarning = "warning" // mailgate before issue #22
)

// syslogRedialInterval spaces the attempts to reach a syslog socket that
// is missing or failed: a dial per line would cost a flood of failures a
// system call each, and syslog coming back is noticed within a second.
const syslogRedialInterval = time.Second

// syslogSink owns the syslog connection and its writer goroutine. A
// syslog socket that is missing at start-up or goes away later does not
// stop mailgate: lines are dropped and counted until it is back, an ERROR
// on standard error names the socket, and the writer dials again at most
// once per syslogRedialInterval when there is a line to send.
type syslogSink struct {
	cfg      SyslogConfig
	target   string       // the socket, in words, for messages
	log      *slog.Logger // standard error only, never this sink
	failWarn bool         // failures at LOG_WARNING (syslog.failure_severity)
	ch       chan syslogLine
	done     chan struct{}
	dropped  atomic.Int64 // lines lost to a full queue
	lost     atomic.Int64 // lines lost because syslog was unreachable
	up       atomic.Bool  // connected now
	once     sync.Once

	// Only the writer goroutine (and Close, once it ended) use these.
	w        *syslog.Writer // nil while syslog is unreachable
	nextDial time.Time      // no dial before this
}

// syslogTargetName describes syslog.address for messages, naming the
// socket a mail admin has to look at.
func syslogTargetName(addr string) string {
	if addr == "" {
		return "the local syslog socket /dev/log (also tried: /var/run/syslog, /var/run/log)"
	}
	return addr
}

// dialSyslogWriter connects once as c says.
func dialSyslogWriter(c SyslogConfig) (*syslog.Writer, error) {
	network, raddr, err := syslogTarget(c.Address)
	if err != nil {
		return nil, err
	}
	fac, err := syslogFacility(c.Facility)
	if err != nil {
		return nil, err
	}
	w, err := syslog.Dial(network, raddr, fac|syslog.LOG_INFO, c.Tag)
	if err != nil {
		return nil, fmt.Errorf("syslog: cannot connect to %s: %w", syslogTargetName(c.Address), err)
	}
	return w, nil
}

// probeSyslog connects to syslog as c says and hangs up: check-config's
// test that serve's lines would reach the socket.
func probeSyslog(c SyslogConfig) error {
	w, err := dialSyslogWriter(c)
	if err != nil {
		return err
	}
	return w.Close()
}

// dialSyslog starts the sink and its writer. Only a config error fails
// it; an unreachable socket is logged on log and retried.
func dialSyslog(c SyslogConfig, log *slog.Logger) (*syslogSink, error) {
	if _, _, err := syslogTarget(c.Address); err != nil {
		return nil, err
	}
	if _, err := syslogFacility(c.Facility); err != nil {
		return nil, err
	}
	s := &syslogSink{cfg: c, target: syslogTargetName(c.Address), log: log,
		failWarn: c.FailureSeverity == severityWarning,
		ch:       make(chan syslogLine, syslogQueue), done: make(chan struct{})}
	w, err := dialSyslogWriter(c)
	if err != nil {
		log.Error("syslog: not connected; mail is served, the fail2ban lines are dropped and counted (mailgate_syslog_lines_dropped_total) until the socket is there; retrying",
			"address", s.target, "err", err)
		s.nextDial = time.Now().Add(syslogRedialInterval)
	} else {
		s.w = w
		s.up.Store(true)
	}
	go s.run()
	return s, nil
}

func (s *syslogSink) run() {
	defer close(s.done)
	for l := range s.ch {
		if s.w == nil && !s.redial() {
			s.lost.Add(1)
			continue
		}
		var err error
		if l.warn {
			err = s.w.Warning(l.text)
		} else {
			err = s.w.Info(l.text)
		}
		if err != nil {
			// log/syslog has already redialled once for this line.
			s.lost.Add(1)
			_ = s.w.Close()
			s.w = nil
			s.up.Store(false)
			s.nextDial = time.Now().Add(syslogRedialInterval)
			s.log.Error("syslog: write failed; mail is served, the fail2ban lines are dropped and counted (mailgate_syslog_lines_dropped_total) until the socket is back; retrying",
				"address", s.target, "err", err)
		}
	}
}

// redial tries to reconnect when the last attempt is long enough ago.
func (s *syslogSink) redial() bool {
	now := time.Now()
	if now.Before(s.nextDial) {
		return false
	}
	w, err := dialSyslogWriter(s.cfg)
	if err != nil {
		s.nextDial = now.Add(syslogRedialInterval)
		return false
	}
	s.w = w
	s.up.Store(true)
	s.log.Info("syslog: connected", "address", s.target, "lines_dropped", s.lost.Load())
	return true
}

// send queues a line, or drops it when the queue is full.
func (s *syslogSink) send(l syslogLine) {
	select {
	case s.ch <- l:
	default:
		s.dropped.Add(1)
	}
}

// Close writes what is queued (bounded by syslogFlushTimeout) and closes
// the connection. Records handled after Close are not sent.
func (s *syslogSink) Close() error {
	var err error
	s.once.Do(func() {
		close(s.ch)
		select {
		case <-s.done:
			if s.w != nil {
				err = s.w.Close()
			}
		case <-time.After(syslogFlushTimeout):
			// The writer is stuck on the socket; the process is ending.
		}
	})
	return err
}

var (
	descSyslogDropped = prometheus.NewDesc("mailgate_syslog_lines_dropped_total",
		"Legacy syslog lines not sent: reason queue_full (syslog too slow) or unreachable (socket missing or failing).",
		[]string{"reason"}, nil)
	descSyslogConnected = prometheus.NewDesc("mailgate_syslog_connected",
		"1 while the syslog socket for the legacy lines is connected.", nil, nil)
)

// Describe and Collect make the sink's counters a Prometheus collector.
func (s *syslogSink) Describe(ch chan<- *prometheus.Desc) {
	ch <- descSyslogDropped
	ch <- descSyslogConnected
}

func (s *syslogSink) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(descSyslogDropped, prometheus.CounterValue, float64(s.dropped.Load()), "queue_full")
	ch <- prometheus.MustNewConstMetric(descSyslogDropped, prometheus.CounterValue, float64(s.lost.Load()), "unreachable")
	up := 0.0
	if s.up.Load() {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(descSyslogConnected, prometheus.GaugeValue, up)
}

// registerSyslogMetrics registers the sink behind log, if any, on reg.
func registerSyslogMetrics(reg prometheus.Registerer, log *slog.Logger) {
	if h, ok := log.Handler().(*syslogHandler); ok {
		reg.MustRegister(h.sink)
	}
}

// syslogHandler passes every record to next and sends the legacy line of
// login decision records to sink.
type syslogHandler struct {
	next  slog.Handler
	sink  *syslogSink
	attrs legacyFields // fields from With (proto, remote)
	group bool         // inside WithGroup: keys are no longer ours
}

// legacyFields are the record fields a legacy line is built from.
type legacyFields struct {
	user, proto, remote, country, countryName, prefix string
}

func (f *legacyFields) set(a slog.Attr) {
	v := a.Value.Resolve().String()
	switch a.Key {
	case "user":
		f.user = v
	case "proto":
		f.proto = v
	case "remote":
		f.remote = v
	case "country":
		f.country = v
	case "country_name":
		f.countryName = v
	case "prefix":
		f.prefix = v
	}
}

func newSyslogHandler(next slog.Handler, sink *syslogSink) *syslogHandler {
	return &syslogHandler{next: next, sink: sink}
}

// Enabled is true from Info up even when next is quieter: AUTHPASS is an
// Info record and fail2ban needs it whatever log.level says.
func (h *syslogHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelInfo || h.next.Enabled(ctx, l)
}

func (h *syslogHandler) Handle(ctx context.Context, r slog.Record) error {
	if !h.group && legacyEvents[r.Message] && r.Level >= slog.LevelInfo {
		f := h.attrs
		r.Attrs(func(a slog.Attr) bool { f.set(a); return true })
		h.sink.send(syslogLine{warn: h.sink.failWarn && r.Message != "AUTHPASS", text: legacyLine(r.Message, f)})
	}
	if h.next.Enabled(ctx, r.Level) {
		return h.next.Handle(ctx, r)
	}
	return nil
}

func (h *syslogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.next = h.next.WithAttrs(as)
	if !h.group {
		for _, a := range as {
			c.attrs.set(a)
		}
	}
	return &c
}

func (h *syslogHandler) WithGroup(name string) slog.Handler {
	c := *h
	c.next = h.next.WithGroup(name)
	c.group = c.group || name != ""
	return &c
}

// legacyLine renders the auth_http script's line:
// "<user> : <EVENT>|<proto> <ip>|<CC>|<Country>". The guard's BANNED
// line has the banned prefix where the country would be.
func legacyLine(event string, f legacyFields) string {
	cc, name := f.country, f.countryName
	if !isCountryCode(cc) {
		// As the PHP script wrote what IP2Location answered for an
		// address it did not place: "-" for code and name. The label
		// (loopback, private, ...) stays in the structured log.
		cc, name = "-", "-"
	}
	if event == "BANNED" || event == "LOCKED" {
		cc, name = f.prefix, ""
	}
	return fmt.Sprintf("%s : %s|%s %s|%s|%s", legacyField(f.user), event, legacyField(f.proto),
		legacyField(f.remote), legacyField(cc), legacyName(name))
}

// isCountryCode reports whether s is an ISO 3166-1 alpha-2 code as the
// proxy logs it (upper case); labels of unplaced addresses are lower case.
func isCountryCode(s string) bool {
	return len(s) == 2 && s[0] >= 'A' && s[0] <= 'Z' && s[1] >= 'A' && s[1] <= 'Z'
}

// legacyField makes a field one token of printable ASCII: spaces, '|'
// and ASCII controls become '?', every other non-ASCII rune is escaped
// (\u00a0), so no Unicode space or separator splits the field for a
// fail2ban regex (Python's \S knows Unicode spaces); "-" when empty, so
// the line keeps its shape. The proxy has escaped user names already;
// this also covers names the guard's events carry.
func legacyField(s string) string {
	if s == "" {
		return "-"
	}
	var b strings.Builder
	for _, r := range s {
		switch {
		case r <= ' ' || r == 0x7f || r == '|' || r == utf8.RuneError:
			b.WriteByte('?')
		case r < 0x7f:
			b.WriteRune(r)
		case r <= 0xffff:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			fmt.Fprintf(&b, `\U%08x`, r)
		}
	}
	return b.String()
}

// legacyName keeps spaces (country names have them) but no '|', ':',
// controls or other Unicode spaces and separators, so the line keeps
// exactly one " : " and stays one line.
func legacyName(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '|' || r == ':' || (r != ' ' && !unicode.IsPrint(r)) {
			return '?'
		}
		return r
	}, s)
}

// newServeLogger is newLogger plus, when syslog.enabled, the legacy
// syslog lines. The returned func flushes and closes syslog.
func newServeLogger(cfg *Config, stderr io.Writer) (*slog.Logger, func(), error) {
	log := newLogger(cfg.Log, stderr)
	if !cfg.Syslog.Enabled {
		return log, func() {}, nil
	}
	sink, err := dialSyslog(cfg.Syslog, log.With("component", "syslog"))
	if err != nil {
		return nil, nil, fmt.Errorf("syslog: %w", err)
	}
	return slog.New(newSyslogHandler(log.Handler(), sink)), func() {
		_ = sink.Close()
		if n := sink.dropped.Load(); n > 0 {
			log.Warn("syslog: lines dropped because the syslog socket was too slow", "lines", n)
		}
		if n := sink.lost.Load(); n > 0 {
			log.Warn("syslog: lines dropped because the syslog socket was unreachable", "lines", n, "address", sink.target)
		}
	}, nil
}
