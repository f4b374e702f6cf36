// Package legacysyslog sends the legacy syslog lines fail2ban jails match.
//
// The nginx auth_http PHP script mailgate replaces logged one line per
// login to syslog (facility LOCAL0, tag NGINXMAILAUTH):
//
//	<user> : COUNTRYFAILED|<proto> <ip>|<CC>|<Country>
//
// and likewise AUTHFAILED and AUTHPASS. Existing fail2ban jails match
// those lines, so Handler wraps the normal slog handler and, for the
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
// or failing socket does not stop mailgate either (see Sink).
package legacysyslog

import (
	"context"
	"fmt"
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

// queueLen bounds the lines waiting for the syslog socket: a few
// seconds of a brute-force flood; beyond that lines are dropped.
const queueLen = 4096

// flushTimeout bounds the wait for queued lines at exit.
const flushTimeout = 2 * time.Second

// Config is the config file's `syslog:` section.
type Config struct {
	// Enabled turns the syslog lines on.
	Enabled bool `yaml:"enabled"`
	// Address is "" for the local syslog socket (/dev/log), or
	// "udp:host:port", "tcp:host:port", "unixgram:/path" or "unix:/path";
	// a bare "host:port" means UDP.
	Address string `yaml:"address"`
	// Facility is a syslog facility name (LOCAL0 ... LOCAL7, MAIL, AUTH,
	// AUTHPRIV, DAEMON, USER); default LOCAL0 as the PHP script used.
	Facility string `yaml:"facility"`
	// Tag is the syslog tag (program name) fail2ban filters match on;
	// default NGINXMAILAUTH, as the PHP script used.
	Tag string `yaml:"tag"`
	// FailureSeverity is the severity of AUTHFAILED, COUNTRYFAILED,
	// BANNED and LOCKED lines: "info" (default, as the PHP script, so
	// rsyslog rules such as local0.=info keep them) or "warning".
	// AUTHPASS is always info.
	FailureSeverity string `yaml:"failure_severity"`
}

// legacyEvents are the messages that get a legacy line.
var legacyEvents = map[string]bool{
	"AUTHPASS": true, "AUTHFAILED": true, "COUNTRYFAILED": true,
	"BANNED": true, "LOCKED": true,
}

// ParseAddress splits syslog.address into log/syslog's network and
// address; ("", "") is the local socket.
func ParseAddress(addr string) (network, raddr string, err error) {
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

// ParseFacility maps a facility name to its priority bits.
func ParseFacility(name string) (syslog.Priority, error) {
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

// line is one queued legacy line.
type line struct {
	warn bool // LOG_WARNING, else LOG_INFO
	text string
}

// Values of syslog.failure_severity.
const (
	SeverityInfo    = "info"    // the PHP script's syslog(LOG_INFO, ...)
	SeverityWarning = "warning" // mailgate before issue #22
)

// redialInterval spaces the attempts to reach a syslog socket that
// is missing or failed: a dial per line would cost a flood of failures a
// system call each, and syslog coming back is noticed within a second.
const redialInterval = time.Second

// Sink owns the syslog connection and its writer goroutine. A
// syslog socket that is missing at start-up or goes away later does not
// stop mailgate: lines are dropped and counted until it is back, an ERROR
// on standard error names the socket, and the writer dials again at most
// once per redialInterval when there is a line to send.
type Sink struct {
	cfg      Config
	target   string       // the socket, in words, for messages
	log      *slog.Logger // standard error only, never this sink
	failWarn bool         // failures at LOG_WARNING (syslog.failure_severity)
	ch       chan line
	done     chan struct{}
	dropped  atomic.Int64 // lines lost to a full queue
	lost     atomic.Int64 // lines lost because syslog was unreachable
	up       atomic.Bool  // connected now
	once     sync.Once

	// Only the writer goroutine (and Close, once it ended) use these.
	w        *syslog.Writer // nil while syslog is unreachable
	nextDial time.Time      // no dial before this
}

// targetName describes syslog.address for messages, naming the
// socket a mail admin has to look at.
func targetName(addr string) string {
	if addr == "" {
		return "the local syslog socket /dev/log (also tried: /var/run/syslog, /var/run/log)"
	}
	return addr
}

// dialWriter connects once as c says.
func dialWriter(c Config) (*syslog.Writer, error) {
	network, raddr, err := ParseAddress(c.Address)
	if err != nil {
		return nil, err
	}
	fac, err := ParseFacility(c.Facility)
	if err != nil {
		return nil, err
	}
	w, err := syslog.Dial(network, raddr, fac|syslog.LOG_INFO, c.Tag)
	if err != nil {
		return nil, fmt.Errorf("syslog: cannot connect to %s: %w", targetName(c.Address), err)
	}
	return w, nil
}

// Probe connects to syslog as c says and hangs up: check-config's
// test that serve's lines would reach the socket.
func Probe(c Config) error {
	w, err := dialWriter(c)
	if err != nil {
		return err
	}
	return w.Close()
}

// Dial starts the sink and its writer. Only a config error fails
// it; an unreachable socket is logged on log and retried.
func Dial(c Config, log *slog.Logger) (*Sink, error) {
	if _, _, err := ParseAddress(c.Address); err != nil {
		return nil, err
	}
	if _, err := ParseFacility(c.Facility); err != nil {
		return nil, err
	}
	s := &Sink{cfg: c, target: targetName(c.Address), log: log,
		failWarn: c.FailureSeverity == SeverityWarning,
		ch:       make(chan line, queueLen), done: make(chan struct{})}
	w, err := dialWriter(c)
	if err != nil {
		log.Error("syslog: not connected; mail is served, the fail2ban lines are dropped and counted (mailgate_syslog_lines_dropped_total) until the socket is there; retrying",
			"address", s.target, "err", err)
		s.nextDial = time.Now().Add(redialInterval)
	} else {
		s.w = w
		s.up.Store(true)
	}
	go s.run()
	return s, nil
}

func (s *Sink) run() {
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
			s.nextDial = time.Now().Add(redialInterval)
			s.log.Error("syslog: write failed; mail is served, the fail2ban lines are dropped and counted (mailgate_syslog_lines_dropped_total) until the socket is back; retrying",
				"address", s.target, "err", err)
		}
	}
}

// redial tries to reconnect when the last attempt is long enough ago.
func (s *Sink) redial() bool {
	now := time.Now()
	if now.Before(s.nextDial) {
		return false
	}
	w, err := dialWriter(s.cfg)
	if err != nil {
		s.nextDial = now.Add(redialInterval)
		return false
	}
	s.w = w
	s.up.Store(true)
	s.log.Info("syslog: connected", "address", s.target, "lines_dropped", s.lost.Load())
	return true
}

// Dropped counts the lines lost to a full queue (syslog too slow).
func (s *Sink) Dropped() int64 { return s.dropped.Load() }

// Lost counts the lines lost because syslog was unreachable.
func (s *Sink) Lost() int64 { return s.lost.Load() }

// Target names the socket for messages.
func (s *Sink) Target() string { return s.target }

// send queues a line, or drops it when the queue is full.
func (s *Sink) send(l line) {
	select {
	case s.ch <- l:
	default:
		s.dropped.Add(1)
	}
}

// Close writes what is queued (bounded by flushTimeout) and closes
// the connection. Records handled after Close are not sent.
func (s *Sink) Close() error {
	var err error
	s.once.Do(func() {
		close(s.ch)
		select {
		case <-s.done:
			if s.w != nil {
				err = s.w.Close()
			}
		case <-time.After(flushTimeout):
			// The writer is stuck on the socket; the process is ending.
		}
	})
	return err
}

var (
	descDropped = prometheus.NewDesc("mailgate_syslog_lines_dropped_total",
		"Legacy syslog lines not sent: reason queue_full (syslog too slow) or unreachable (socket missing or failing).",
		[]string{"reason"}, nil)
	descConnected = prometheus.NewDesc("mailgate_syslog_connected",
		"1 while the syslog socket for the legacy lines is connected.", nil, nil)
)

// Describe and Collect make the sink's counters a Prometheus collector.
func (s *Sink) Describe(ch chan<- *prometheus.Desc) {
	ch <- descDropped
	ch <- descConnected
}

func (s *Sink) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(s.dropped.Load()), "queue_full")
	ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(s.lost.Load()), "unreachable")
	up := 0.0
	if s.up.Load() {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(descConnected, prometheus.GaugeValue, up)
}

// Handler passes every record to next and sends the legacy line of
// login decision records to sink.
type Handler struct {
	next  slog.Handler
	sink  *Sink
	attrs legacyFields // fields from With (proto, remote)
	group bool         // inside WithGroup: keys are no longer ours
}

// legacyFields are the record fields a legacy line is built from.
type legacyFields struct {
	user, proto, remote, country, countryName, prefix string
	// console: the record is about a web console account (the guard's
	// LOCKED of one), which the PHP script never had: no legacy line.
	console bool
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
	case "console_user":
		f.console = true
	}
}

// NewHandler returns a Handler passing every record to next and the
// legacy lines to sink.
func NewHandler(next slog.Handler, sink *Sink) *Handler {
	return &Handler{next: next, sink: sink}
}

// Sink is where h sends the legacy lines.
func (h *Handler) Sink() *Sink { return h.sink }

// Enabled is true from Info up even when next is quieter: AUTHPASS is an
// Info record and fail2ban needs it whatever log.level says.
func (h *Handler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelInfo || h.next.Enabled(ctx, l)
}

func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	if !h.group && legacyEvents[r.Message] && r.Level >= slog.LevelInfo {
		f := h.attrs
		r.Attrs(func(a slog.Attr) bool { f.set(a); return true })
		if !f.console {
			h.sink.send(line{warn: h.sink.failWarn && r.Message != "AUTHPASS", text: legacyLine(r.Message, f)})
		}
	}
	if h.next.Enabled(ctx, r.Level) {
		return h.next.Handle(ctx, r)
	}
	return nil
}

func (h *Handler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.next = h.next.WithAttrs(as)
	if !h.group {
		for _, a := range as {
			c.attrs.set(a)
		}
	}
	return &c
}

func (h *Handler) WithGroup(name string) slog.Handler {
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
