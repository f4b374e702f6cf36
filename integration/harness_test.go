//go:build integration

// Package integration runs the real mailgate binary between real clients
// (go-imap, Python's imaplib/poplib/smtplib, curl, swaks) and a real Dovecot
// and Postfix that TestMain starts on loopback ports with a private
// configuration in a scratch directory.
//
// Implementation notes: the daemon configurations follow the verified recipe
// in the project's shared docs (real-backends.md); every odd-looking line
// below (uid 8, mode 0755 scratch dir under /tmp, short paths, daemon stdio
// to a file, maillog_file_prefixes) is there because of a pitfall listed
// in that recipe. Dovecot and Postfix are started once per package run, not
// per test: each costs seconds to start and stop.
package integration

import (
	"context"
	"crypto/md5"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Users in Dovecot's passwd-file; Postfix accepts mail for each of them.
var users = map[string]string{
	"alice@example.test": "alicepass",
	"bob@example.test":   "bobpass",
	"carol@example.test": "carolpass",
}

// harness is the state TestMain sets up once for all tests.
type harness struct {
	dir  string // scratch directory (short, mode 0755, under /tmp)
	repo string // repository root

	imapPort, pop3Port, lmtpPort, authPort int // Dovecot listeners
	smtpPort, subPort                      int // Postfix: plain MX-style smtpd, and SASL submission

	mailgateBin string // built once from ./cmd/mailgate
	buildErr    error  // why the binary is missing; tests needing it fail
	keep        bool   // leave dir for inspection (a test failed)
}

var (
	// h is nil when the backends are unavailable; skipReason says why.
	h          *harness
	skipReason string
)

// inCI reports whether missing services must fail rather than skip.
func inCI() bool { return os.Getenv("CI") == "true" }

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	var missing []string
	for _, bin := range []string{"dovecot", "doveadm", "postfix", "postconf"} {
		if _, err := lookPath(bin); err != nil {
			missing = append(missing, bin)
		}
	}
	if len(missing) > 0 {
		msg := fmt.Sprintf("integration: %s not installed (Debian: apt-get install dovecot-core dovecot-imapd dovecot-pop3d dovecot-lmtpd postfix; or run bash .ci/run)", strings.Join(missing, ", "))
		if inCI() {
			fmt.Fprintln(os.Stderr, msg+"; CI=true, so this is a failure")
			return 1
		}
		fmt.Fprintln(os.Stderr, msg+"; skipping the integration tests")
		skipReason = msg
		return m.Run()
	}
	hs, err := setup()
	if hs != nil {
		defer hs.teardown()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration: starting the backends failed:", err)
		if hs != nil {
			fmt.Fprintln(os.Stderr, "--- dovecot log ---\n"+hs.dovecotLog())
			fmt.Fprintln(os.Stderr, "--- postfix log ---\n"+hs.postfixLog())
			fmt.Fprintln(os.Stderr, "--- start log ---\n"+readFile(filepath.Join(hs.dir, "start.log")))
		}
		return 1
	}
	h = hs
	code := m.Run()
	if code != 0 {
		fmt.Fprintf(os.Stderr, "integration: logs kept in %s (dovecot/dovecot.log, postfix/postfix.log)\n", hs.dir)
		hs.keep = true
	}
	return code
}

// lookPath finds daemons that live in sbin, which may not be on a test
// runner's PATH.
func lookPath(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/usr/local/sbin", "/sbin"} {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: not found", name)
}

// need returns the harness or skips (fails in CI) the test.
func need(t testing.TB) *harness {
	t.Helper()
	if h == nil {
		if inCI() {
			t.Fatalf("backends unavailable: %s", skipReason)
		}
		t.Skip(skipReason)
	}
	return h
}

func setup() (*harness, error) {
	// Daemon users must enter the directory: not t.TempDir (0700) and
	// short enough for 108-byte unix socket paths.
	dir, err := os.MkdirTemp("/tmp", "mg")
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	repo, err := filepath.Abs("..")
	if err != nil {
		return nil, err
	}
	hs := &harness{dir: dir, repo: repo}
	ports, err := freePorts(6)
	if err != nil {
		return hs, err
	}
	hs.imapPort, hs.pop3Port, hs.lmtpPort, hs.authPort, hs.smtpPort, hs.subPort =
		ports[0], ports[1], ports[2], ports[3], ports[4], ports[5]

	if err := hs.startWatchdog(); err != nil {
		return hs, fmt.Errorf("watchdog: %w", err)
	}

	// Build the binary in parallel with daemon start-up.
	built := make(chan struct{})
	go func() {
		defer close(built)
		hs.mailgateBin = filepath.Join(dir, "mailgate")
		args := []string{"build", "-o", hs.mailgateBin}
		if raceEnabled {
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, "./cmd/mailgate")...)
		cmd.Dir = repo
		if out, err := cmd.CombinedOutput(); err != nil {
			hs.buildErr = fmt.Errorf("go build ./cmd/mailgate: %v\n%s", err, out)
		}
	}()
	defer func() { <-built }()

	if err := hs.startDovecot(); err != nil {
		return hs, fmt.Errorf("dovecot: %w", err)
	}
	if err := hs.startPostfix(); err != nil {
		return hs, fmt.Errorf("postfix: %w", err)
	}
	return hs, nil
}

// keep leaves the scratch directory for inspection after a failure.
func (hs *harness) teardownDir() {
	if !hs.keep {
		os.RemoveAll(hs.dir)
	}
}

func (hs *harness) teardown() {
	hs.stopPostfix()
	hs.stopDovecot()
	hs.teardownDir()
}

// watchdogScript waits until the test binary ($1) is gone, then stops
// Dovecot ($2 doveadm, $3 config) and Postfix ($4 postfix, $5 config
// dir). It matters when the binary dies without running TestMain's
// teardown (a panic, or go test's -timeout); after a normal teardown the
// stop commands find nothing to stop.
const watchdogScript = `while kill -0 "$1" 2>/dev/null; do sleep 1; done
"$2" -c "$3" stop >/dev/null 2>&1
"$4" -c "$5" stop >/dev/null 2>&1
exit 0`

// startWatchdog starts the watchdog in its own session, so that it
// outlives this process and go test's process group.
func (hs *harness) startWatchdog() error {
	doveadm, err := lookPath("doveadm")
	if err != nil {
		return err
	}
	postfix, err := lookPath("postfix")
	if err != nil {
		return err
	}
	cmd := exec.Command("sh", "-c", watchdogScript, "mailgate-it-watchdog",
		strconv.Itoa(os.Getpid()), doveadm, hs.dovecotConf(), postfix, hs.postfixEtc())
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	// Not waited for: it exits after this process does.
	return cmd.Process.Release()
}

// freePorts picks n distinct loopback ports that are free now (listen on
// port 0, note the number, close). Another process could take one before
// we use it; every daemon start checks its ports accept afterwards.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
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

// closedPort returns a loopback port that refuses connections for the
// rest of the test: a TCP socket bound to it but never listening. A port
// that was merely free could be taken by another process meanwhile.
func closedPort(t testing.TB) int {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return sa.(*syscall.SockaddrInet4).Port
}

// waitFor polls cond until it is true or timeout passes.
func waitFor(cond func() bool, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// accepting reports whether a TCP connect to addr succeeds.
func accepting(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func addr(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

func readFile(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	return string(b)
}

// daemon runs a start/stop command with stdio on the start log: daemons
// keep inherited descriptors, so a pipe would never see EOF.
func (hs *harness) daemon(name string, args ...string) error {
	logf, err := os.OpenFile(filepath.Join(hs.dir, "start.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	path, err := lookPath(name)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Stdin = nil
	cmd.Stdout = logf
	cmd.Stderr = logf
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w (see start.log)", name, strings.Join(args, " "), err)
	}
	return nil
}

// --- Dovecot ---

func (hs *harness) dovecotDir() string  { return filepath.Join(hs.dir, "dovecot") }
func (hs *harness) dovecotConf() string { return filepath.Join(hs.dovecotDir(), "dovecot.conf") }

// dovecotLog returns Dovecot's whole log so far.
func (hs *harness) dovecotLog() string {
	return readFile(filepath.Join(hs.dovecotDir(), "dovecot.log"))
}

func (hs *harness) startDovecot() error {
	d := hs.dovecotDir()
	for _, sub := range []string{"", "run", "state"} {
		if err := os.MkdirAll(filepath.Join(d, sub), 0o755); err != nil {
			return err
		}
	}
	// Maildirs belong to user mail (uid/gid 8): Dovecot refuses uid 0.
	mail := filepath.Join(hs.dir, "mail")
	if err := os.MkdirAll(mail, 0o755); err != nil {
		return err
	}
	if err := os.Chown(mail, 8, 8); err != nil {
		return err
	}
	var ub strings.Builder
	for _, u := range sortedUsers() {
		fmt.Fprintf(&ub, "%s:{PLAIN}%s::::::\n", u, users[u])
	}
	usersFile := filepath.Join(d, "users")
	if err := os.WriteFile(usersFile, []byte(ub.String()), 0o640); err != nil {
		return err
	}
	if gid, ok := groupID("dovecot"); ok {
		if err := os.Chown(usersFile, 0, gid); err != nil {
			return err
		}
	}
	conf := fmt.Sprintf(dovecotConf, fmt.Sprintf("%x", md5.Sum([]byte(hs.dir)))[:8],
		d, hs.dir, usersFile, hs.imapPort, hs.pop3Port, hs.lmtpPort, hs.authPort)
	if err := os.WriteFile(hs.dovecotConf(), []byte(conf), 0o644); err != nil {
		return err
	}
	if err := hs.daemon("dovecot", "-c", hs.dovecotConf()); err != nil {
		return err
	}
	for _, p := range []int{hs.imapPort, hs.pop3Port, hs.lmtpPort, hs.authPort} {
		if !waitFor(func() bool { return accepting(addr(p)) }, 20*time.Second) {
			return fmt.Errorf("port %d never accepted", p)
		}
	}
	return nil
}

func (hs *harness) stopDovecot() {
	pid := readPid(filepath.Join(hs.dovecotDir(), "run", "master.pid"))
	if err := hs.daemon("doveadm", "-c", hs.dovecotConf(), "stop"); err != nil {
		fmt.Fprintln(os.Stderr, "integration: stopping dovecot:", err)
	}
	waitGone(pid)
}

// dovecotConf is filled in with: instance suffix, dovecot dir, scratch dir,
// users file, IMAP, POP3, LMTP and auth ports.
const dovecotConf = `instance_name = mailgate-it-%[1]s
base_dir = %[2]s/run
state_dir = %[2]s/state
protocols = imap pop3 lmtp
listen = 127.0.0.1
ssl = no
log_path = %[2]s/dovecot.log
info_log_path = %[2]s/dovecot.log
auth_verbose = yes
imap_id_log = *
verbose_proctitle = yes
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
namespace inbox {
  inbox = yes
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
}
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%%u %[4]s
}
userdb {
  driver = passwd-file
  args = username_format=%%u %[4]s
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = %[5]d
  }
  inet_listener imaps {
    port = 0
  }
}
service pop3-login {
  inet_listener pop3 {
    address = 127.0.0.1
    port = %[6]d
  }
  inet_listener pop3s {
    port = 0
  }
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = %[7]d
  }
}
# SASL for Postfix's submission listener (verify: smtp-auth).
service auth {
  inet_listener auth-inet {
    address = 127.0.0.1
    port = %[8]d
  }
}
`

// --- Postfix ---

func (hs *harness) postfixDir() string { return filepath.Join(hs.dir, "postfix") }
func (hs *harness) postfixEtc() string { return filepath.Join(hs.postfixDir(), "etc") }

// postfixLog returns Postfix's whole log so far.
func (hs *harness) postfixLog() string {
	return readFile(filepath.Join(hs.postfixDir(), "postfix.log"))
}

func (hs *harness) startPostfix() error {
	d := hs.postfixDir()
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
	mainCf := fmt.Sprintf(postfixMainCf, d, hs.lmtpPort, hs.dir)
	masterCf := fmt.Sprintf(postfixMasterCf, hs.smtpPort, hs.subPort, hs.authPort)
	var vmb strings.Builder
	for _, u := range sortedUsers() {
		fmt.Fprintf(&vmb, "%s OK\n", u)
	}
	for name, body := range map[string]string{"main.cf": mainCf, "master.cf": masterCf, "vmailbox": vmb.String()} {
		if err := os.WriteFile(filepath.Join(hs.postfixEtc(), name), []byte(body), 0o644); err != nil {
			return err
		}
	}
	if err := hs.daemon("postfix", "-c", hs.postfixEtc(), "start"); err != nil {
		return err
	}
	for _, p := range []int{hs.smtpPort, hs.subPort} {
		if !waitFor(func() bool { return accepting(addr(p)) }, 20*time.Second) {
			return fmt.Errorf("port %d never accepted", p)
		}
	}
	return nil
}

func (hs *harness) stopPostfix() {
	pid := readPid(filepath.Join(hs.postfixDir(), "spool", "pid", "master.pid"))
	if err := hs.daemon("postfix", "-c", hs.postfixEtc(), "stop"); err != nil {
		fmt.Fprintln(os.Stderr, "integration: stopping postfix:", err)
	}
	waitGone(pid)
}

// postfixMainCf is filled in with: postfix dir, LMTP port, scratch dir.
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
smtpd_banner = $myhostname ESMTP test-backend
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
virtual_mailbox_domains = example.test
virtual_mailbox_maps = texthash:$config_directory/vmailbox
virtual_transport = lmtp:inet:127.0.0.1:%[2]d
local_transport = error:local delivery disabled in test backend
default_transport = error:outbound delivery disabled in test backend
relay_transport = error:outbound delivery disabled in test backend
alias_maps =
alias_database =
biff = no
append_dot_mydomain = no
# 25 MB test messages; the default is 10240000.
message_size_limit = 52428800
maillog_file = %[1]s/postfix.log
maillog_file_prefixes = %[3]s
`

// postfixMasterCf is filled in with: SMTP port, submission port, Dovecot
// auth port. The submission listener authenticates through Dovecot SASL
// (for mailgate's verify: smtp-auth) and allows AUTH without TLS because
// mailgate terminates TLS on loopback.
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
pickup unix n - n 60 1 pickup
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

// --- small OS helpers ---

func sortedUsers() []string {
	return []string{"alice@example.test", "bob@example.test", "carol@example.test"}
}

// readPid reads a (possibly space-padded) pid file; 0 if absent.
func readPid(p string) int {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

// waitGone waits for a daemon's master to exit after its stop command,
// then kills it if it is still there.
func waitGone(pid int) {
	if pid <= 0 {
		return
	}
	alive := func() bool { return syscall.Kill(pid, 0) == nil }
	if waitFor(func() bool { return !alive() }, 10*time.Second) {
		return
	}
	fmt.Fprintf(os.Stderr, "integration: pid %d still running after stop; killing it\n", pid)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		fmt.Fprintln(os.Stderr, "integration: kill:", err)
	}
}

// userIDs looks a system user up in /etc/passwd (no cgo needed).
func userIDs(name string) (uid, gid int, ok bool) {
	for _, line := range strings.Split(readFile("/etc/passwd"), "\n") {
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
	for _, line := range strings.Split(readFile("/etc/group"), "\n") {
		f := strings.Split(line, ":")
		if len(f) >= 3 && f[0] == name {
			g, err := strconv.Atoi(f[2])
			return g, err == nil
		}
	}
	return 0, false
}

// logSince returns what was appended to a log after mark (a length
// earlier returned by len(log)).
func logSince(log string, mark int) string {
	if mark > len(log) {
		return ""
	}
	return log[mark:]
}

// hasLine reports whether one line of log contains every one of parts.
func hasLine(log string, parts ...string) bool {
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
