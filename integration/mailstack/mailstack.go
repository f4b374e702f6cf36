// Package mailstack starts a private Dovecot (and optionally Postfix) on
// loopback ports, in a scratch directory, without systemd: the backends
// for the benchmark harness (cmd/mailgate-bench) and for anything else
// outside tests that needs a real mail server.
//
// The configuration follows the project's verified recipe for running
// Dovecot and Postfix as root on loopback (shared docs, real-backends.md):
// uid 8 for mail, a mode 0755 scratch directory under /tmp with a short
// path (unix sockets are limited to 108 bytes), daemon stdio to a file
// (daemons keep inherited descriptors, so a pipe never sees EOF), and
// maillog_file_prefixes for Postfix logging without syslog. Unlike the
// integration tests' harness, Dovecot here also has implicit-TLS IMAPS
// and POP3S listeners (self-signed certificate) and limits sized for
// thousands of concurrent sessions.
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
	"time"
)

// ErrMissing means a daemon binary is not installed.
var ErrMissing = errors.New("mailstack: not installed")

// Options say what to start.
type Options struct {
	// Users maps login to password; empty means DefaultUsers.
	Users map[string]string
	// Postfix also starts Postfix (SMTP and a SASL submission listener
	// authenticating through Dovecot).
	Postfix bool
	// MaxSessions is how many concurrent IMAP sessions Dovecot must hold
	// (imap client/process limits, per-user-and-IP limit); 0 means 1000.
	MaxSessions int
	// LoginProcesses > 0 runs imap-login and pop3-login in Dovecot's
	// high-performance mode (service_count = 0) with that many long-lived
	// login processes, which also do the TLS of direct IMAPS/POP3S
	// sessions. 0 keeps Debian's default: a new login process per
	// connection (fork, TLS setup, exit), which costs Dovecot several ms
	// of CPU per login.
	LoginProcesses int
}

// DefaultUsers are the accounts created when Options.Users is empty.
var DefaultUsers = map[string]string{
	"alice@example.test": "alicepass",
	"bob@example.test":   "bobpass",
	"carol@example.test": "carolpass",
}

// Stack is a running Dovecot (and Postfix). All ports are on 127.0.0.1.
type Stack struct {
	Dir string // scratch directory; removed by Stop

	IMAP, IMAPS, POP3, POP3S, LMTP, Auth int // Dovecot listeners
	// Postfix (0 without it): plain smtpd, SASL submission without TLS,
	// and SASL submission with implicit TLS (RFC 8314).
	SMTP, Submission, SMTPS int

	CertFile, KeyFile string // Dovecot's self-signed certificate (PEM)

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
// returned Stack (if not nil) must still be stopped.
func Start(ctx context.Context, opts Options) (*Stack, error) {
	if m := Missing(opts); len(m) > 0 {
		return nil, fmt.Errorf("%w: %s (Debian: apt-get install dovecot-core dovecot-imapd dovecot-pop3d dovecot-lmtpd postfix)", ErrMissing, strings.Join(m, ", "))
	}
	if len(opts.Users) == 0 {
		opts.Users = DefaultUsers
	}
	for u, p := range opts.Users {
		// passwd-file fields are colon-separated lines.
		if u == "" || strings.ContainsAny(u+p, ":\r\n\x00") || strings.ContainsAny(u, " ") {
			return nil, fmt.Errorf("mailstack: user %q: no colon, space, CR, LF or NUL allowed in users and passwords", u)
		}
	}
	if opts.MaxSessions <= 0 {
		opts.MaxSessions = 1000
	}
	dir, err := os.MkdirTemp("/tmp", "mgb")
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	s := &Stack{Dir: dir, postfix: opts.Postfix}
	ports, err := FreePorts(9)
	if err != nil {
		return s, err
	}
	s.IMAP, s.IMAPS, s.POP3, s.POP3S, s.LMTP, s.Auth = ports[0], ports[1], ports[2], ports[3], ports[4], ports[5]
	if opts.Postfix {
		s.SMTP, s.Submission, s.SMTPS = ports[6], ports[7], ports[8]
	}
	if err := s.startDovecot(ctx, opts); err != nil {
		return s, fmt.Errorf("dovecot: %w (log: %s)", err, filepath.Join(dir, "dovecot", "dovecot.log"))
	}
	if opts.Postfix {
		if err := s.startPostfix(ctx, opts); err != nil {
			return s, fmt.Errorf("postfix: %w", err)
		}
	}
	return s, nil
}

// Stop stops the daemons and removes the scratch directory.
func (s *Stack) Stop() {
	if s == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if s.postfix {
		pid := readPid(filepath.Join(s.Dir, "postfix", "spool", "pid", "master.pid"))
		_ = s.daemon(ctx, "postfix", "-c", filepath.Join(s.Dir, "postfix", "etc"), "stop")
		waitGone(pid)
	}
	pid := readPid(filepath.Join(s.Dir, "dovecot", "run", "master.pid"))
	if pid > 0 {
		_ = s.daemon(ctx, "doveadm", "-c", filepath.Join(s.Dir, "dovecot", "dovecot.conf"), "stop")
		waitGone(pid)
	}
	if !s.Keep {
		os.RemoveAll(s.Dir)
	}
}

// DovecotPID is the pid of Dovecot's master process, 0 if unknown.
func (s *Stack) DovecotPID() int {
	return readPid(filepath.Join(s.Dir, "dovecot", "run", "master.pid"))
}

// Addr is "127.0.0.1:port".
func Addr(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// FreePorts picks n distinct loopback ports that are free now. Another
// process could take one meanwhile; starts check their ports afterwards.
func FreePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// SelfSigned writes a fresh ECDSA P-256 certificate for the given names
// to certFile and keyFile (PEM, mode 0644: daemons read them as other users).
func SelfSigned(certFile, keyFile string, names ...string) error {
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

func (s *Stack) startDovecot(ctx context.Context, opts Options) error {
	d := filepath.Join(s.Dir, "dovecot")
	for _, sub := range []string{"", "run", "state"} {
		if err := os.MkdirAll(filepath.Join(d, sub), 0o755); err != nil {
			return err
		}
	}
	mail := filepath.Join(s.Dir, "mail")
	if err := os.MkdirAll(mail, 0o755); err != nil {
		return err
	}
	if err := os.Chown(mail, 8, 8); err != nil {
		return err
	}
	s.CertFile, s.KeyFile = filepath.Join(d, "cert.pem"), filepath.Join(d, "key.pem")
	if err := SelfSigned(s.CertFile, s.KeyFile, "imap.example.test"); err != nil {
		return err
	}
	usersFile := filepath.Join(d, "users")
	if err := os.WriteFile(usersFile, []byte(usersLines(opts.Users, "%s:{PLAIN}%s::::::\n")), 0o644); err != nil {
		return err
	}
	// Each imap process serves up to perProc sessions, so MaxSessions
	// needs MaxSessions/perProc processes, not one process per session.
	const perProc = 500
	procs := opts.MaxSessions/perProc + 4
	// Default mode: a login process per connection, which stays alive as
	// the TLS proxy of a direct IMAPS session, so it needs as many
	// processes as sessions.
	login := fmt.Sprintf("  process_limit = %d\n", opts.MaxSessions+1000)
	if opts.LoginProcesses > 0 {
		login = fmt.Sprintf("  service_count = 0\n  process_min_avail = %d\n  process_limit = %d\n", opts.LoginProcesses, opts.LoginProcesses)
	}
	conf := fmt.Sprintf(dovecotConf, fmt.Sprintf("%x", md5.Sum([]byte(s.Dir)))[:8], d, s.Dir, usersFile,
		s.IMAP, s.IMAPS, s.POP3, s.POP3S, s.LMTP, s.Auth, s.CertFile, s.KeyFile,
		opts.MaxSessions+1000, procs, perProc)
	conf = strings.ReplaceAll(conf, "  #LOGIN#\n", login)
	confFile := filepath.Join(d, "dovecot.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o644); err != nil {
		return err
	}
	if err := s.daemon(ctx, "dovecot", "-c", confFile); err != nil {
		return err
	}
	return waitAccepting(ctx, s.IMAP, s.IMAPS, s.POP3, s.POP3S, s.LMTP, s.Auth)
}

// dovecotConf: instance suffix, dovecot dir, scratch dir, users file,
// IMAP, IMAPS, POP3, POP3S, LMTP, auth ports, cert, key, client limit,
// imap process limit, imap clients per process.
const dovecotConf = `instance_name = mailgate-bench-%[1]s
base_dir = %[2]s/run
state_dir = %[2]s/state
protocols = imap pop3 lmtp
listen = 127.0.0.1
ssl = yes
ssl_cert = <%[11]s
ssl_key = <%[12]s
log_path = %[2]s/dovecot.log
info_log_path = %[2]s/dovecot.log
disable_plaintext_auth = no
auth_mechanisms = plain login
login_trusted_networks = 127.0.0.0/8 ::1
mail_uid = 8
mail_gid = 8
first_valid_uid = 8
last_valid_uid = 8
first_valid_gid = 8
last_valid_gid = 8
mail_home = %[3]s/mail/%%d/%%n
mail_location = maildir:~/Maildir
postmaster_address = postmaster@example.test
hostname = imap.example.test
default_client_limit = %[13]d
default_vsz_limit = 1G
namespace inbox {
  inbox = yes
}
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%%u %[4]s
}
userdb {
  driver = passwd-file
  args = username_format=%%u %[4]s
}
protocol imap {
  # One benchmark user logs in from 127.0.0.1 thousands of times at once.
  mail_max_userip_connections = %[13]d
}
protocol pop3 {
  mail_max_userip_connections = %[13]d
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = %[5]d
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = %[6]d
    ssl = yes
  }
  #LOGIN#
}
service imap {
  # Many sessions per process (and processes reused): one process per
  # session would need gigabytes for thousands of idle sessions.
  service_count = 0
  process_limit = %[14]d
  client_limit = %[15]d
}
service pop3-login {
  inet_listener pop3 {
    address = 127.0.0.1
    port = %[7]d
  }
  inet_listener pop3s {
    address = 127.0.0.1
    port = %[8]d
    ssl = yes
  }
  #LOGIN#
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = %[9]d
  }
}
service auth {
  inet_listener auth-inet {
    address = 127.0.0.1
    port = %[10]d
  }
}
`

func (s *Stack) startPostfix(ctx context.Context, opts Options) error {
	d := filepath.Join(s.Dir, "postfix")
	for _, sub := range []string{"etc", "spool", "data"} {
		if err := os.MkdirAll(filepath.Join(d, sub), 0o755); err != nil {
			return err
		}
	}
	if uid, gid, ok := userIDs("postfix"); ok {
		if err := os.Chown(filepath.Join(d, "data"), uid, gid); err != nil {
			return err
		}
	}
	files := map[string]string{
		"main.cf":   fmt.Sprintf(postfixMainCf, d, s.LMTP, s.Dir),
		"master.cf": fmt.Sprintf(postfixMasterCf, s.SMTP, s.Submission, s.Auth, s.SMTPS, s.CertFile, s.KeyFile),
		"vmailbox":  usersLines(opts.Users, "%s OK\n"),
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(d, "etc", name), []byte(body), 0o644); err != nil {
			return err
		}
	}
	if err := s.daemon(ctx, "postfix", "-c", filepath.Join(d, "etc"), "start"); err != nil {
		return err
	}
	return waitAccepting(ctx, s.SMTP, s.Submission, s.SMTPS)
}

// postfixMainCf: postfix dir, LMTP port, scratch dir.
const postfixMainCf = `compatibility_level = 3.6
queue_directory = %[1]s/spool
data_directory = %[1]s/data
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
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
virtual_mailbox_domains = example.test
virtual_mailbox_maps = texthash:$config_directory/vmailbox
virtual_transport = lmtp:inet:127.0.0.1:%[2]d
local_transport = error:local delivery disabled
default_transport = error:outbound delivery disabled
relay_transport = error:outbound delivery disabled
alias_maps =
alias_database =
biff = no
append_dot_mydomain = no
default_process_limit = 200
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
message_size_limit = 52428800
maillog_file = %[1]s/postfix.log
maillog_file_prefixes = %[3]s
`

// postfixMasterCf: SMTP port, submission port, Dovecot auth port, SMTPS
// port, certificate, key.
const postfixMasterCf = `127.0.0.1:%[1]d inet n - n - - smtpd
127.0.0.1:%[2]d inet n - n - - smtpd
  -o syslog_name=postfix/submission
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_sasl_type=dovecot
  -o smtpd_sasl_path=inet:127.0.0.1:%[3]d
  -o smtpd_sasl_security_options=noanonymous
  -o smtpd_tls_security_level=none
  -o smtpd_client_restrictions=
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
127.0.0.1:%[4]d inet n - n - - smtpd
  -o syslog_name=postfix/smtps
  -o smtpd_tls_wrappermode=yes
  -o smtpd_tls_security_level=encrypt
  -o smtpd_tls_cert_file=%[5]s
  -o smtpd_tls_key_file=%[6]s
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_sasl_type=dovecot
  -o smtpd_sasl_path=inet:127.0.0.1:%[3]d
  -o smtpd_sasl_security_options=noanonymous
  -o smtpd_client_restrictions=
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
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
`

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

// waitAccepting waits until every port accepts a TCP connection.
func waitAccepting(ctx context.Context, ports ...int) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for _, p := range ports {
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
