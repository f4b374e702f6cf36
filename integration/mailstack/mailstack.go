// Package mailstack starts a private Dovecot (and optionally Postfix) on
// loopback ports, in a scratch directory, without systemd. It is the one
// implementation behind the integration tests (integration), the backend
// package's real-server tests and the benchmark tool (cmd/mailgate-bench);
// Options switch on what each of them needs.
//
// The configuration follows the project's verified recipe for running
// Dovecot and Postfix as root on loopback (shared docs, real-backends.md):
// uid 8 for mail, a mode 0755 scratch directory under /tmp with a short
// path (unix sockets are limited to 108 bytes), daemon stdio to a file
// (daemons keep inherited descriptors, so a pipe never sees EOF), and
// maillog_file_prefixes for Postfix logging without syslog.
//
// This package must not import anything of mailgate (but testport, which
// imports nothing of it): backend's tests import it.
package mailstack

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/md5"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/template"
	"time"

	"github.com/mailgate/mailgate/integration/testport"
)

// ErrMissing means a daemon binary is not installed.
var ErrMissing = errors.New("mailstack: not installed")

// errPortBusy means a daemon could not bind a port picked as free: a
// program outside the tests took it in between. Start retries with fresh
// ports, testport.Attempts times in all.
var errPortBusy = errors.New("mailstack: a picked port was taken meanwhile")

// defaultMessageSize is Postfix's message_size_limit unless
// Options.MessageSizeLimit says otherwise: room for the 25 MB test
// messages (Postfix's own default is 10240000).
const defaultMessageSize = 52428800

// Options say what to start.
type Options struct {
	// Users maps login to password; empty means DefaultUsers.
	Users map[string]string
	// Postfix also starts Postfix (SMTP and a SASL submission listener
	// authenticating through Dovecot, for mailgate's verify: smtp-auth).
	Postfix bool
	// MaxSessions is how many concurrent IMAP sessions Dovecot must hold
	// (imap client/process limits, per-user-and-IP limit); 0 means 1000.
	MaxSessions int
	// LoginProcesses > 0 runs imap-login and pop3-login in Dovecot's
	// high-performance mode (service_count = 0) with that many long-lived
	// login processes, which also do the TLS of direct IMAPS/POP3S
	// sessions, and reuses pop3 processes as imap's always are. 0 keeps Debian's default: a new login process per
	// connection (fork, TLS setup, exit), which costs Dovecot several ms
	// of CPU per login.
	LoginProcesses int

	// Dir is the scratch directory to use; it must exist and is made mode
	// 0755. Empty: a new directory under /tmp. Stop removes it unless Keep.
	Dir string
	// Name goes into Dovecot's instance_name (shown by ps); empty means
	// "mailstack".
	Name string
	// NoTLS leaves TLS out: Dovecot runs with ssl = no and no IMAPS/POP3S
	// listeners, Postfix without SMTPS, and no certificate is made. The
	// integration tests want this: mailgate talks plaintext to loopback
	// backends, and Dovecot must not advertise STARTTLS to it.
	NoTLS bool
	// Verbose makes Dovecot log auth failures, IMAP ID fields and process
	// titles (auth_verbose, imap_id_log, verbose_proctitle): lines that
	// tests look for in DovecotLog.
	Verbose bool
	// SpecialUse auto-creates and subscribes Drafts, Sent and Trash with
	// their RFC 6154 attributes, as mail clients find them on real servers.
	SpecialUse bool
	// AnyUserChars lets Dovecot accept any character in user names
	// (auth_username_chars empty), so "+" and UTF-8 reach the passdb.
	AnyUserChars bool
	// MessageSizeLimit is Postfix's message_size_limit in bytes; 0 means
	// 52428800.
	MessageSizeLimit int
	// Watchdog starts a detached shell that stops the daemons once this
	// process has exited, for when it dies without calling Stop (a panic,
	// go test's -timeout). After a normal Stop it finds nothing to stop.
	Watchdog bool
	// DovecotExtra is appended to dovecot.conf as it is: settings a
	// test's own Dovecot needs beyond the shared ones (the auth_policy
	// lines of docs/dovecot-policy.md). A setting given again here wins.
	DovecotExtra string
}

// DefaultUsers are the accounts created when Options.Users is empty.
var DefaultUsers = map[string]string{
	"alice@example.test": "alicepass",
	"bob@example.test":   "bobpass",
	"carol@example.test": "carolpass",
}

// Stack is a running Dovecot (and Postfix). All ports are on 127.0.0.1.
type Stack struct {
	Dir string // scratch directory; removed by Stop unless Keep

	// Dovecot listeners; IMAPS and POP3S are 0 with NoTLS.
	IMAP, IMAPS, POP3, POP3S, LMTP, Auth int
	// Postfix (0 without it): plain smtpd, SASL submission without TLS,
	// and SASL submission with implicit TLS (RFC 8314; 0 with NoTLS).
	SMTP, Submission, SMTPS int

	// IMAPHAProxy is a plaintext Dovecot IMAP listener that takes a PROXY
	// header (v1 or v2; haproxy = yes) from 127.0.0.0/8;
	// SubmissionHAProxy a Postfix SASL submission listener that takes a
	// PROXY header (smtpd_upstream_proxy_protocol = haproxy; 0 without
	// Postfix). AuthSocket is the path of a unix_listener of Dovecot's
	// auth service (the client protocol, as Postfix's SASL uses), beside
	// the inet_listener Auth.
	IMAPHAProxy, SubmissionHAProxy int
	AuthSocket                     string

	CertFile, KeyFile string // Dovecot's self-signed certificate (PEM); empty with NoTLS

	// Keep leaves Dir in place on Stop, for reading the daemons' logs.
	Keep bool

	postfix bool
}

// Missing lists the daemon programs needed for opts that are not installed.
func Missing(opts Options) []string {
	need := []string{"dovecot", "doveadm"}
	if opts.Postfix {
		need = append(need, "postfix")
	}
	var out []string
	for _, n := range need {
		if _, err := LookPath(n); err != nil {
			out = append(out, n)
		}
	}
	return out
}

// Start writes the configuration and starts the daemons. On error the
// returned Stack (if not nil) must still be stopped; its logs say why.
func Start(ctx context.Context, opts Options) (*Stack, error) {
	if m := Missing(opts); len(m) > 0 {
		return nil, fmt.Errorf("%w: %s (Debian: apt-get install dovecot-core dovecot-imapd dovecot-pop3d dovecot-lmtpd postfix)", ErrMissing, strings.Join(m, ", "))
	}
	if len(opts.Users) == 0 {
		opts.Users = DefaultUsers
	}
	for u, p := range opts.Users {
		// passwd-file fields are colon-separated lines; vmailbox lines
		// are space-separated.
		if u == "" || strings.ContainsAny(u+p, ":\r\n\x00") || strings.ContainsAny(u, " ") {
			return nil, fmt.Errorf("mailstack: user %q: no colon, space, CR, LF or NUL allowed in users and passwords", u)
		}
	}
	if opts.MaxSessions <= 0 {
		opts.MaxSessions = 1000
	}
	if opts.MessageSizeLimit <= 0 {
		opts.MessageSizeLimit = defaultMessageSize
	}
	if opts.Name == "" {
		opts.Name = "mailstack"
	}
	dir := opts.Dir
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("/tmp", "mgb"); err != nil {
			return nil, err
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	s := &Stack{Dir: dir, postfix: opts.Postfix}
	if opts.Watchdog {
		if err := s.startWatchdog(); err != nil {
			return s, fmt.Errorf("mailstack: watchdog: %w", err)
		}
	}
	var err error
	for range testport.Attempts {
		if err = s.start(ctx, opts); !errors.Is(err, errPortBusy) {
			break
		}
		s.stopDaemons()
	}
	return s, err
}

// start picks ports and starts the daemons once.
func (s *Stack) start(ctx context.Context, opts Options) error {
	ports, err := FreePorts(11)
	if err != nil {
		return err
	}
	s.IMAP, s.POP3, s.LMTP, s.Auth = ports[0], ports[2], ports[4], ports[5]
	s.IMAPS, s.POP3S = 0, 0
	s.IMAPHAProxy, s.SubmissionHAProxy = ports[9], 0
	s.AuthSocket = filepath.Join(s.Dir, "dovecot", "run", "auth-mailgate")
	if !opts.NoTLS {
		s.IMAPS, s.POP3S = ports[1], ports[3]
	}
	s.SMTP, s.Submission, s.SMTPS = 0, 0, 0
	if opts.Postfix {
		s.SMTP, s.Submission, s.SubmissionHAProxy = ports[6], ports[7], ports[10]
		if !opts.NoTLS {
			s.SMTPS = ports[8]
		}
	}
	if err := s.startDovecot(ctx, opts); err != nil {
		return fmt.Errorf("dovecot: %w (log: %s)", s.busy(err), filepath.Join(s.Dir, "dovecot", "dovecot.log"))
	}
	if opts.Postfix {
		if err := s.startPostfix(ctx, opts); err != nil {
			return fmt.Errorf("postfix: %w (log: %s)", s.busy(err), filepath.Join(s.Dir, "postfix", "postfix.log"))
		}
	}
	return nil
}

// busy marks a start error as errPortBusy when a daemon logged that it
// could not bind.
func (s *Stack) busy(err error) error {
	for _, l := range []string{s.DovecotLog(), s.PostfixLog(), s.StartLog()} {
		if testport.InUse(l) {
			return fmt.Errorf("%w: %w", errPortBusy, err)
		}
	}
	return err
}

// Stop stops the daemons and removes the scratch directory unless Keep.
func (s *Stack) Stop() {
	if s == nil {
		return
	}
	s.stopDaemons()
	if !s.Keep {
		os.RemoveAll(s.Dir)
	}
}

func (s *Stack) stopDaemons() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if s.postfix {
		if pid := s.PostfixPID(); pid > 0 {
			_ = s.daemon(ctx, "postfix", "-c", s.PostfixConfDir(), "stop")
			waitGone(pid)
		}
	}
	if pid := s.DovecotPID(); pid > 0 {
		_ = s.daemon(ctx, "doveadm", "-c", s.DovecotConf(), "stop")
		waitGone(pid)
	}
}

// DovecotPID is the pid of Dovecot's master process, 0 if unknown.
func (s *Stack) DovecotPID() int {
	return readPid(filepath.Join(s.Dir, "dovecot", "run", "master.pid"))
}

// PostfixPID is the pid of Postfix's master process, 0 without Postfix
// or if unknown.
func (s *Stack) PostfixPID() int {
	if !s.postfix {
		return 0
	}
	return readPid(filepath.Join(s.Dir, "postfix", "spool", "pid", "master.pid"))
}

// DovecotConf is the path of Dovecot's configuration file (for doveadm -c).
func (s *Stack) DovecotConf() string { return filepath.Join(s.Dir, "dovecot", "dovecot.conf") }

// PostfixConfDir is Postfix's config_directory (for postfix -c).
func (s *Stack) PostfixConfDir() string { return filepath.Join(s.Dir, "postfix", "etc") }

// DovecotLog returns Dovecot's whole log so far.
func (s *Stack) DovecotLog() string { return readLog(filepath.Join(s.Dir, "dovecot", "dovecot.log")) }

// PostfixLog returns Postfix's whole log so far ("" without Postfix).
func (s *Stack) PostfixLog() string { return readLog(filepath.Join(s.Dir, "postfix", "postfix.log")) }

// StartLog returns what the start and stop commands printed.
func (s *Stack) StartLog() string { return readLog(filepath.Join(s.Dir, "start.log")) }

// HasLine reports whether one line of log contains every one of parts.
func HasLine(log string, parts ...string) bool {
	for _, line := range strings.Split(log, "\n") {
		all := true
		for _, p := range parts {
			if !strings.Contains(line, p) {
				all = false
				break
			}
		}
		if all {
			return true
		}
	}
	return false
}

// WaitLog waits until a line of log() contains every one of parts: the
// daemons write their log lines a little after the reply the test saw.
func WaitLog(ctx context.Context, log func() string, parts ...string) error {
	for {
		if HasLine(log(), parts...) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no log line with %q: %w", parts, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Addr is "127.0.0.1:port".
func Addr(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// FreePorts picks n distinct loopback ports, for programs that bind them
// later: outside the kernel's ephemeral range, so no port-0 bind can take
// them meanwhile, and never the same port twice (testport.Take). An
// unrelated program could still, rarely, bind one first: Start retries
// with fresh ports when a daemon cannot bind. An in-process listener
// needs no picked port: listen on 127.0.0.1:0 and pass the listener.
func FreePorts(n int) ([]int, error) { return testport.Take(n) }

// SelfSigned writes a fresh ECDSA P-256 certificate for the given names
// to certFile and keyFile (PEM, mode 0644: daemons read them as other users).
func SelfSigned(certFile, keyFile string, names ...string) error {
	if len(names) == 0 {
		return errors.New("mailstack: SelfSigned needs a name")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(30 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return err
	}
	return os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o644)
}

// LookPath finds daemons that live in sbin, which may not be on PATH.
func LookPath(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/usr/local/sbin", "/sbin"} {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: %s", ErrMissing, name)
}

// watchdogScript waits until the process $1 is gone, then stops Dovecot
// ($2 doveadm, $3 config) and, if $4 is set, Postfix ($4 postfix, $5
// config dir).
const watchdogScript = `while kill -0 "$1" 2>/dev/null; do sleep 1; done
"$2" -c "$3" stop >/dev/null 2>&1
[ -n "$4" ] && "$4" -c "$5" stop >/dev/null 2>&1
exit 0`

// startWatchdog starts the watchdog in its own session, so that it
// outlives this process and go test's process group.
func (s *Stack) startWatchdog() error {
	doveadm, err := LookPath("doveadm")
	if err != nil {
		return err
	}
	var postfix string
	if s.postfix {
		if postfix, err = LookPath("postfix"); err != nil {
			return err
		}
	}
	cmd := exec.Command("sh", "-c", watchdogScript, "mailstack-watchdog",
		strconv.Itoa(os.Getpid()), doveadm, s.DovecotConf(), postfix, s.PostfixConfDir())
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	// Not waited for: it exits after this process does.
	return cmd.Process.Release()
}

// daemon runs a start/stop command with stdio on the start log.
func (s *Stack) daemon(ctx context.Context, name string, args ...string) error {
	logf, err := os.OpenFile(filepath.Join(s.Dir, "start.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	path, err := LookPath(name)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w (see %s)", name, strings.Join(args, " "), err, filepath.Join(s.Dir, "start.log"))
	}
	return nil
}

// dovecotData fills dovecotConf.
type dovecotData struct {
	Opts                              Options
	Instance, Dir, Scratch, UsersFile string
	S                                 *Stack
	Login                             string
	ClientLimit, Procs, PerProc       int
}

func (s *Stack) startDovecot(ctx context.Context, opts Options) error {
	d := filepath.Join(s.Dir, "dovecot")
	for _, sub := range []string{"", "run", "state"} {
		if err := os.MkdirAll(filepath.Join(d, sub), 0o755); err != nil {
			return err
		}
	}
	// Maildirs belong to user mail (uid/gid 8): Dovecot refuses uid 0.
	mail := filepath.Join(s.Dir, "mail")
	if err := os.MkdirAll(mail, 0o755); err != nil {
		return err
	}
	if err := os.Chown(mail, 8, 8); err != nil {
		return err
	}
	if !opts.NoTLS && s.CertFile == "" {
		s.CertFile, s.KeyFile = filepath.Join(d, "cert.pem"), filepath.Join(d, "key.pem")
		if err := SelfSigned(s.CertFile, s.KeyFile, "imap.example.test"); err != nil {
			return err
		}
	}
	usersFile := filepath.Join(d, "users")
	if err := writeSecret(usersFile, usersLines(opts.Users, "%s:{PLAIN}%s::::::\n")); err != nil {
		return err
	}
	// Each imap process serves up to perProc sessions, so MaxSessions
	// needs MaxSessions/perProc processes, not one process per session.
	const perProc = 500
	// Default mode: a login process per connection, which stays alive as
	// the TLS proxy of a direct IMAPS session, so it needs as many
	// processes as sessions.
	login := fmt.Sprintf("process_limit = %d", opts.MaxSessions+1000)
	if opts.LoginProcesses > 0 {
		login = fmt.Sprintf("service_count = 0\n  process_min_avail = %d\n  process_limit = %d", opts.LoginProcesses, opts.LoginProcesses)
	}
	var b strings.Builder
	err := dovecotConf.Execute(&b, dovecotData{
		Opts:        opts,
		Instance:    opts.Name + "-" + fmt.Sprintf("%x", md5.Sum([]byte(s.Dir)))[:8],
		Dir:         d,
		Scratch:     s.Dir,
		UsersFile:   usersFile,
		S:           s,
		Login:       login,
		ClientLimit: opts.MaxSessions + 1000,
		Procs:       opts.MaxSessions/perProc + 4,
		PerProc:     perProc,
	})
	if err != nil {
		return err
	}
	if err := os.WriteFile(s.DovecotConf(), []byte(b.String()), 0o644); err != nil {
		return err
	}
	if err := s.daemon(ctx, "dovecot", "-c", s.DovecotConf()); err != nil {
		return err
	}
	return waitAccepting(ctx, s.IMAP, s.IMAPS, s.POP3, s.POP3S, s.LMTP, s.Auth, s.IMAPHAProxy)
}

// writeSecret writes the passwd-file readable by Dovecot's auth process
// (group dovecot) but not by everyone, where the group exists.
func writeSecret(path, body string) error {
	gid, ok := groupID("dovecot")
	mode := os.FileMode(0o644)
	if ok {
		mode = 0o640
	}
	if err := os.WriteFile(path, []byte(body), mode); err != nil {
		return err
	}
	if ok {
		return os.Chown(path, 0, gid)
	}
	return nil
}

var dovecotConf = template.Must(template.New("dovecot.conf").Parse(`instance_name = {{.Instance}}
base_dir = {{.Dir}}/run
state_dir = {{.Dir}}/state
protocols = imap pop3 lmtp
listen = 127.0.0.1
{{- if .Opts.NoTLS}}
ssl = no
{{- else}}
ssl = yes
ssl_cert = <{{.S.CertFile}}
ssl_key = <{{.S.KeyFile}}
{{- end}}
log_path = {{.Dir}}/dovecot.log
info_log_path = {{.Dir}}/dovecot.log
{{- if .Opts.Verbose}}
auth_verbose = yes
imap_id_log = *
verbose_proctitle = yes
{{- end}}
disable_plaintext_auth = no
auth_mechanisms = plain login
{{- if .Opts.AnyUserChars}}
# Any character in user names, so "+" and UTF-8 reach the passdb.
auth_username_chars =
{{- end}}
login_trusted_networks = 127.0.0.0/8 ::1
# Only the imap-haproxy listener takes PROXY headers.
haproxy_trusted_networks = 127.0.0.0/8 ::1
mail_uid = 8
mail_gid = 8
first_valid_uid = 8
last_valid_uid = 8
first_valid_gid = 8
last_valid_gid = 8
mail_home = {{.Scratch}}/mail/%d/%n
mail_location = maildir:~/Maildir
postmaster_address = postmaster@example.test
hostname = imap.example.test
default_client_limit = {{.ClientLimit}}
default_vsz_limit = 1G
namespace inbox {
  inbox = yes
{{- if .Opts.SpecialUse}}
  mailbox Drafts {
    auto = subscribe
    special_use = \Drafts
  }
  mailbox Sent {
    auto = subscribe
    special_use = \Sent
  }
  mailbox Trash {
    auto = subscribe
    special_use = \Trash
  }
{{- end}}
}
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {{.UsersFile}}
}
userdb {
  driver = passwd-file
  args = username_format=%u {{.UsersFile}}
}
protocol imap {
  # One benchmark user logs in from 127.0.0.1 thousands of times at once.
  mail_max_userip_connections = {{.ClientLimit}}
}
protocol pop3 {
  mail_max_userip_connections = {{.ClientLimit}}
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = {{.S.IMAP}}
  }
  inet_listener imap-haproxy {
    address = 127.0.0.1
    port = {{.S.IMAPHAProxy}}
    haproxy = yes
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = {{.S.IMAPS}}
{{- if not .Opts.NoTLS}}
    ssl = yes
{{- end}}
  }
  {{.Login}}
}
service imap {
  # Many sessions per process (and processes reused): one process per
  # session would need gigabytes for thousands of idle sessions.
  service_count = 0
  process_limit = {{.Procs}}
  client_limit = {{.PerProc}}
}
{{- if gt .Opts.LoginProcesses 0}}
service pop3 {
  # High-performance mode (the benchmark's): pop3 processes reused like
  # imap's, so a login costs Dovecot its work, not a fork and exec.
  service_count = 0
  process_limit = {{.Procs}}
  client_limit = {{.PerProc}}
}
{{- end}}
service pop3-login {
  inet_listener pop3 {
    address = 127.0.0.1
    port = {{.S.POP3}}
  }
  inet_listener pop3s {
    address = 127.0.0.1
    port = {{.S.POP3S}}
{{- if not .Opts.NoTLS}}
    ssl = yes
{{- end}}
  }
  {{.Login}}
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = {{.S.LMTP}}
  }
}
# SASL for Postfix's submission listeners (mailgate's verify: smtp-auth).
service auth {
  inet_listener auth-inet {
    address = 127.0.0.1
    port = {{.S.Auth}}
  }
  # mailgate's verify: dovecot-auth over a unix socket.
  unix_listener auth-mailgate {
    mode = 0666
  }
}
{{.Opts.DovecotExtra}}
`))

// postfixData fills postfixMainCf and postfixMasterCf.
type postfixData struct {
	Opts         Options
	Dir, Scratch string
	S            *Stack
}

func (s *Stack) startPostfix(ctx context.Context, opts Options) error {
	d := filepath.Join(s.Dir, "postfix")
	for _, sub := range []string{"etc", "spool", "data"} {
		if err := os.MkdirAll(filepath.Join(d, sub), 0o755); err != nil {
			return err
		}
	}
	// The master creates data/master.lock as mail_owner.
	if uid, gid, ok := userIDs("postfix"); ok {
		if err := os.Chown(filepath.Join(d, "data"), uid, gid); err != nil {
			return err
		}
	}
	data := postfixData{Opts: opts, Dir: d, Scratch: s.Dir, S: s}
	var mainCf, masterCf strings.Builder
	if err := postfixMainCf.Execute(&mainCf, data); err != nil {
		return err
	}
	if err := postfixMasterCf.Execute(&masterCf, data); err != nil {
		return err
	}
	files := map[string]string{
		"main.cf":   mainCf.String(),
		"master.cf": masterCf.String(),
		"vmailbox":  usersLines(opts.Users, "%s OK\n"),
		// Each user owns its own address; only sessions whose client
		// address is SenderLoginCheckAddr are held to it.
		"sender_login":         usersLines(opts.Users, "%[1]s %[1]s\n"),
		"sender_login_clients": SenderLoginCheckAddr + " sender_login_check\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(s.PostfixConfDir(), name), []byte(body), 0o644); err != nil {
			return err
		}
	}
	if err := s.daemon(ctx, "postfix", "-c", s.PostfixConfDir(), "start"); err != nil {
		return err
	}
	return waitAccepting(ctx, s.SMTP, s.Submission, s.SMTPS, s.SubmissionHAProxy)
}

// SenderLoginCheckAddr is the one client address for which Postfix
// applies reject_sender_login_mismatch (each user owns only its own
// address), so a test can check who may send as whom without changing
// what other tests may send. Postfix also authorizes XCLIENT and XFORWARD
// from all of 127.0.0.0/8, clients included, as a careless site would.
const SenderLoginCheckAddr = "127.0.0.29"

var postfixMainCf = template.Must(template.New("main.cf").Parse(`compatibility_level = 3.6
queue_directory = {{.Dir}}/spool
data_directory = {{.Dir}}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.example.test
mydomain = example.test
myorigin = $mydomain
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_authorized_xclient_hosts = 127.0.0.0/8
smtpd_authorized_xforward_hosts = 127.0.0.0/8
smtpd_sender_login_maps = texthash:$config_directory/sender_login
smtpd_restriction_classes = sender_login_check
sender_login_check = reject_sender_login_mismatch
smtpd_sender_restrictions = check_client_access texthash:$config_directory/sender_login_clients
smtpd_banner = $myhostname ESMTP test-backend
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
virtual_mailbox_domains = example.test
virtual_mailbox_maps = texthash:$config_directory/vmailbox
virtual_transport = lmtp:inet:127.0.0.1:{{.S.LMTP}}
local_transport = error:local delivery disabled in test backend
default_transport = error:outbound delivery disabled in test backend
relay_transport = error:outbound delivery disabled in test backend
alias_maps =
alias_database =
biff = no
append_dot_mydomain = no
default_process_limit = 200
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
message_size_limit = {{.Opts.MessageSizeLimit}}
maillog_file = {{.Dir}}/postfix.log
maillog_file_prefixes = {{.Scratch}}
`))

// postfixMasterCf: the submission listeners authenticate through Dovecot
// SASL; the plain one allows AUTH without TLS because mailgate
// terminates TLS and talks to it on loopback.
var postfixMasterCf = template.Must(template.New("master.cf").Parse(`127.0.0.1:{{.S.SMTP}} inet n - n - - smtpd
127.0.0.1:{{.S.Submission}} inet n - n - - smtpd
  -o syslog_name=postfix/submission
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_sasl_type=dovecot
  -o smtpd_sasl_path=inet:127.0.0.1:{{.S.Auth}}
  -o smtpd_sasl_security_options=noanonymous
  -o smtpd_tls_security_level=none
  -o smtpd_client_restrictions=
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
127.0.0.1:{{.S.SubmissionHAProxy}} inet n - n - - smtpd
  -o syslog_name=postfix/submission-haproxy
  -o smtpd_upstream_proxy_protocol=haproxy
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_sasl_type=dovecot
  -o smtpd_sasl_path=inet:127.0.0.1:{{.S.Auth}}
  -o smtpd_sasl_security_options=noanonymous
  -o smtpd_tls_security_level=none
  -o smtpd_client_restrictions=
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
{{- if not .Opts.NoTLS}}
127.0.0.1:{{.S.SMTPS}} inet n - n - - smtpd
  -o syslog_name=postfix/smtps
  -o smtpd_tls_wrappermode=yes
  -o smtpd_tls_security_level=encrypt
  -o smtpd_tls_cert_file={{.S.CertFile}}
  -o smtpd_tls_key_file={{.S.KeyFile}}
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_sasl_type=dovecot
  -o smtpd_sasl_path=inet:127.0.0.1:{{.S.Auth}}
  -o smtpd_sasl_security_options=noanonymous
  -o smtpd_client_restrictions=
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
{{- end}}
pickup unix n - n 60 1 pickup
tlsmgr unix - - n 1000? 1 tlsmgr
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
proxywrite unix - - n - 1 proxymap
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
lmtp unix - - n - - lmtp
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
`))

func usersLines(users map[string]string, format string) string {
	names := make([]string, 0, len(users))
	for u := range users {
		names = append(names, u)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, u := range names {
		if strings.Count(format, "%s") == 2 {
			fmt.Fprintf(&b, format, u, users[u])
		} else {
			fmt.Fprintf(&b, format, u)
		}
	}
	return b.String()
}

// waitAccepting waits until every port (0s skipped) accepts a TCP
// connection.
func waitAccepting(ctx context.Context, ports ...int) error {
	// Long: on a busy machine a daemon can take many seconds to start.
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for _, p := range ports {
		if p == 0 {
			continue
		}
		for {
			c, err := net.DialTimeout("tcp", Addr(p), time.Second)
			if err == nil {
				c.Close()
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("port %d never accepted: %w", p, err)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return nil
}

// readLog returns a whole log file, or why it cannot.
func readLog(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	return string(b)
}

func readPid(p string) int {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

// waitGone waits up to 10 s for pid to exit after its stop command, then
// kills it.
func waitGone(pid int) {
	if pid <= 0 {
		return
	}
	for range 200 {
		if syscall.Kill(pid, 0) != nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
}

// userIDs looks a system user up in /etc/passwd (no cgo needed).
func userIDs(name string) (uid, gid int, ok bool) {
	b, _ := os.ReadFile("/etc/passwd")
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(line, ":")
		if len(f) >= 4 && f[0] == name {
			u, err1 := strconv.Atoi(f[2])
			g, err2 := strconv.Atoi(f[3])
			return u, g, err1 == nil && err2 == nil
		}
	}
	return 0, 0, false
}

// groupID looks a group up in /etc/group.
func groupID(name string) (int, bool) {
	b, _ := os.ReadFile("/etc/group")
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(line, ":")
		if len(f) >= 3 && f[0] == name {
			g, err := strconv.Atoi(f[2])
			return g, err == nil
		}
	}
	return 0, false
}
