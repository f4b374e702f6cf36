//go:build integration

// Tests against a real Dovecot and Postfix, started once by TestMain on
// free loopback ports with a private configuration (the project's
// real-backends recipe: scratch dir under /tmp with mode 0755 and a short
// path, mail uid 8, daemon stdio to a file). They check what fakes cannot:
// that Dovecot and Postfix accept exactly what we send (ID fields, POP3
// XCLIENT, Postfix XCLIENT attributes and xtext, the replayed EHLO).
//
// Run: go test -race -tags integration -run Real -v ./backend/
// Needs root, dovecot (imapd, pop3d) and postfix; skips without them
// unless CI=true.
package backend

import (
	"crypto/md5"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// real is the running backends; nil when unavailable (realSkip says why).
var (
	real     *realServers
	realSkip string
)

type realServers struct {
	dir                                    string
	imapPort, pop3Port, authPort, smtpPort int
	subPort                                int
	keep                                   bool // leave dir for the logs: a test failed
}

func TestMain(m *testing.M) {
	os.Exit(runReal(m))
}

func runReal(m *testing.M) int {
	for _, bin := range []string{"dovecot", "doveadm", "postfix"} {
		if _, err := sbin(bin); err != nil {
			realSkip = "backend integration: " + bin + " not installed"
			if os.Getenv("CI") == "true" {
				fmt.Fprintln(os.Stderr, realSkip+"; CI=true, failing")
				return 1
			}
			return m.Run()
		}
	}
	rs, err := startReal()
	if rs != nil {
		defer rs.stop()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "backend integration: starting Dovecot/Postfix:", err)
		if rs != nil {
			fmt.Fprintln(os.Stderr, rs.log("dovecot/dovecot.log"), rs.log("postfix/postfix.log"), rs.log("start.log"))
		}
		return 1
	}
	real = rs
	code := m.Run()
	if code != 0 {
		fmt.Fprintln(os.Stderr, "backend integration: logs kept in", rs.dir)
		rs.keep = true
	}
	return code
}

func needReal(t *testing.T) *realServers {
	t.Helper()
	if real == nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(realSkip)
		}
		t.Skip(realSkip)
	}
	return real
}

func sbin(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		if st, err := os.Stat(filepath.Join(d, name)); err == nil && !st.IsDir() {
			return filepath.Join(d, name), nil
		}
	}
	return "", errors.New(name + " not found")
}

func (rs *realServers) log(name string) string {
	b, err := os.ReadFile(filepath.Join(rs.dir, name))
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// run starts a daemon command with stdio on start.log: daemons keep
// inherited descriptors, so a pipe would never reach EOF.
func (rs *realServers) run(name string, args ...string) error {
	f, err := os.OpenFile(filepath.Join(rs.dir, "start.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	p, err := sbin(name)
	if err != nil {
		return err
	}
	cmd := exec.Command(p, args...)
	cmd.Stdout, cmd.Stderr = f, f
	return cmd.Run()
}

func startReal() (*realServers, error) {
	dir, err := os.MkdirTemp("/tmp", "mgb")
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	rs := &realServers{dir: dir}
	var ports []int
	var ls []net.Listener
	for range 5 {
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			return rs, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	rs.imapPort, rs.pop3Port, rs.authPort, rs.smtpPort, rs.subPort = ports[0], ports[1], ports[2], ports[3], ports[4]

	dv := filepath.Join(dir, "dovecot")
	for _, d := range []string{"run", "state"} {
		if err := os.MkdirAll(filepath.Join(dv, d), 0o755); err != nil {
			return rs, err
		}
	}
	mail := filepath.Join(dir, "mail")
	if err := os.MkdirAll(mail, 0o755); err != nil {
		return rs, err
	}
	if err := os.Chown(mail, 8, 8); err != nil {
		return rs, err
	}
	users := "alice@example.test:{PLAIN}alicepass::::::\n" +
		"weird+user@example.test:{PLAIN}p\"a\\ss wörd{5}::::::\n"
	if err := os.WriteFile(filepath.Join(dv, "users"), []byte(users), 0o644); err != nil {
		return rs, err
	}
	conf := fmt.Sprintf(realDovecotConf, fmt.Sprintf("%x", md5.Sum([]byte(dir)))[:8], dv, dir, rs.imapPort, rs.pop3Port, rs.authPort)
	if err := os.WriteFile(filepath.Join(dv, "dovecot.conf"), []byte(conf), 0o644); err != nil {
		return rs, err
	}
	if err := rs.run("dovecot", "-c", filepath.Join(dv, "dovecot.conf")); err != nil {
		return rs, fmt.Errorf("dovecot: %w", err)
	}

	pf := filepath.Join(dir, "postfix")
	for _, d := range []string{"etc", "spool", "data"} {
		if err := os.MkdirAll(filepath.Join(pf, d), 0o755); err != nil {
			return rs, err
		}
	}
	if uid, gid, ok := passwdIDs("postfix"); ok {
		if err := os.Chown(filepath.Join(pf, "data"), uid, gid); err != nil {
			return rs, err
		}
	}
	files := map[string]string{
		"main.cf":   fmt.Sprintf(realPostfixMain, pf, dir),
		"master.cf": fmt.Sprintf(realPostfixMaster, rs.smtpPort, rs.subPort, rs.authPort),
		"vmailbox":  "alice@example.test OK\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(pf, "etc", name), []byte(body), 0o644); err != nil {
			return rs, err
		}
	}
	if err := rs.run("postfix", "-c", filepath.Join(pf, "etc"), "start"); err != nil {
		return rs, fmt.Errorf("postfix: %w", err)
	}
	for _, p := range []int{rs.imapPort, rs.pop3Port, rs.smtpPort, rs.subPort} {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
		deadline := time.Now().Add(20 * time.Second)
		for {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				return rs, fmt.Errorf("port %d never accepted", p)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return rs, nil
}

func (rs *realServers) stop() {
	rs.stopDaemons(rs.dir)
	if !rs.keep {
		os.RemoveAll(rs.dir)
	}
}

func (rs *realServers) stopDaemons(dir string) {
	pids := []int{readPidFile(filepath.Join(dir, "postfix/spool/pid/master.pid")), readPidFile(filepath.Join(dir, "dovecot/run/master.pid"))}
	_ = rs.run("postfix", "-c", filepath.Join(dir, "postfix/etc"), "stop")
	_ = rs.run("doveadm", "-c", filepath.Join(dir, "dovecot/dovecot.conf"), "stop")
	for _, pid := range pids {
		if pid <= 0 {
			continue
		}
		for i := 0; i < 100 && syscall.Kill(pid, 0) == nil; i++ {
			time.Sleep(100 * time.Millisecond)
		}
		if syscall.Kill(pid, 0) == nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

func readPidFile(p string) int {
	b, _ := os.ReadFile(p)
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

func passwdIDs(name string) (int, int, bool) {
	b, _ := os.ReadFile("/etc/passwd")
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Split(l, ":")
		if len(f) >= 4 && f[0] == name {
			u, e1 := strconv.Atoi(f[2])
			g, e2 := strconv.Atoi(f[3])
			return u, g, e1 == nil && e2 == nil
		}
	}
	return 0, 0, false
}

// waitLog waits until a line of the log contains all parts.
func (rs *realServers) waitLog(t *testing.T, name string, parts ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, l := range strings.Split(rs.log(name), "\n") {
			all := true
			for _, p := range parts {
				all = all && strings.Contains(l, p)
			}
			if all {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has no line with %q", name, parts)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (rs *realServers) addr(port int) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

// realClient looks foreign; each test uses its own address so Dovecot's
// auth penalty after a wrong password does not slow the others.
func realClient(last byte) Client {
	return Client{
		Addr:    netip.AddrPortFrom(netip.AddrFrom4([4]byte{81, 2, 69, last}), 40000+uint16(last)),
		Local:   netip.MustParseAddrPort("127.0.0.9:993"),
		Session: "mgtest" + strconv.Itoa(int(last)),
		Helo:    "client" + strconv.Itoa(int(last)) + ".example",
		HeloCmd: "EHLO",
	}
}

func TestRealIMAP(t *testing.T) {
	rs := needReal(t)
	for _, force := range []bool{false, true} {
		b := &IMAP{Opts: Options{Address: rs.addr(rs.imapPort), ForwardClient: true, Logger: testLogger(t)}, forceLogin: force}
		c := realClient(142)
		for _, cred := range [][2]string{{"alice@example.test", "alicepass"}, {"weird+user@example.test", "p\"a\\ss wörd{5}"}} {
			sess, err := b.Login(withTimeout(t), c, "T1", cred[0], cred[1])
			if err != nil {
				t.Fatalf("forceLogin=%v %s: %v", force, cred[0], err)
			}
			if !strings.HasPrefix(string(sess.Reply), "T1 OK [CAPABILITY ") {
				t.Errorf("Reply = %q", sess.Reply)
			}
			io.WriteString(sess.Conn, "T2 SELECT INBOX\r\n")
			_ = sess.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			out, _ := readUntil(sess.Conn, "T2 ")
			if !strings.Contains(out, "T2 OK") {
				t.Errorf("SELECT after login: %q", out)
			}
			sess.Conn.Close()
		}
	}
	rs.waitLog(t, "dovecot/dovecot.log", "imap-login: Info: Login: user=<alice@example.test>", "rip=81.2.69.142", "lip=127.0.0.9", "session=<mgtest142>")

	b := &IMAP{Opts: Options{Address: rs.addr(rs.imapPort), ForwardClient: true}}
	_, err := b.Login(withTimeout(t), realClient(201), "T1", "alice@example.test", "wrong")
	wantErr(t, err, ErrAuthFailed)
}

func TestRealPOP3(t *testing.T) {
	rs := needReal(t)
	b := &POP3{Opts: Options{Address: rs.addr(rs.pop3Port), ForwardClient: true, Logger: testLogger(t)}}
	for _, cred := range [][2]string{{"alice@example.test", "alicepass"}, {"weird+user@example.test", "p\"a\\ss wörd{5}"}} {
		sess, err := b.Login(withTimeout(t), realClient(143), cred[0], cred[1])
		if err != nil {
			t.Fatalf("%s: %v", cred[0], err)
		}
		if !strings.HasPrefix(string(sess.Reply), "+OK") {
			t.Errorf("Reply = %q", sess.Reply)
		}
		io.WriteString(sess.Conn, "STAT\r\n")
		_ = sess.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		out, _ := readUntil(sess.Conn, "+OK")
		if !strings.HasPrefix(out, "+OK 0 0") {
			t.Errorf("STAT after login: %q", out)
		}
		sess.Conn.Close()
	}
	rs.waitLog(t, "dovecot/dovecot.log", "pop3-login: Info: Login: user=<alice@example.test>", "rip=81.2.69.143", "session=<mgtest143>")
	caps, err := b.Capabilities(withTimeout(t))
	if err != nil || !strings.Contains(strings.Join(caps, " "), "UIDL") {
		t.Errorf("Capabilities = %q, %v", caps, err)
	}
	_, err = b.Login(withTimeout(t), realClient(202), "alice@example.test", "wrong")
	wantErr(t, err, ErrAuthFailed)
}

// sendMail runs one transaction on a spliced-ready SMTP session.
func sendMail(t *testing.T, sess *Session, subject string) {
	t.Helper()
	defer sess.Conn.Close()
	_ = sess.Conn.SetDeadline(time.Now().Add(20 * time.Second))
	io.WriteString(sess.Conn, "MAIL FROM:<alice@example.test>\r\n")
	if out, _ := readUntil(sess.Conn, "250 "); !strings.Contains(out, "250 ") {
		t.Fatalf("MAIL FROM: %q", out)
	}
	io.WriteString(sess.Conn, "RCPT TO:<alice@example.test>\r\n")
	if out, _ := readUntil(sess.Conn, "250 "); !strings.Contains(out, "250 ") {
		t.Fatalf("RCPT TO: %q", out)
	}
	io.WriteString(sess.Conn, "DATA\r\n")
	if out, _ := readUntil(sess.Conn, "354 "); !strings.Contains(out, "354 ") {
		t.Fatalf("DATA: %q", out)
	}
	io.WriteString(sess.Conn, "Subject: "+subject+"\r\n\r\nhello\r\n.\r\n")
	if out, _ := readUntil(sess.Conn, "250 "); !strings.Contains(out, "250 ") {
		t.Fatalf("end of data: %q", out)
	}
}

func TestRealSMTPIMAPVerify(t *testing.T) {
	rs := needReal(t)
	b := &SMTP{
		Opts:       Options{Address: rs.addr(rs.smtpPort), Logger: testLogger(t)},
		Verify:     VerifyIMAP,
		XCLIENT:    true,
		Hostname:   "mailgate.test",
		VerifyIMAP: &IMAP{Opts: Options{Address: rs.addr(rs.imapPort), ForwardClient: true}},
		CacheTTL:   time.Minute,
	}
	exts, err := b.Extensions(withTimeout(t))
	if err != nil || !strings.Contains(strings.Join(exts, "|"), "XCLIENT") {
		t.Fatalf("Extensions = %q, %v", exts, err)
	}
	for _, user := range []string{"alice@example.test", "weird+user@example.test"} {
		pass := map[string]string{"alice@example.test": "alicepass", "weird+user@example.test": "p\"a\\ss wörd{5}"}[user]
		sess, err := b.Login(withTimeout(t), realClient(144), user, pass)
		if err != nil {
			t.Fatalf("%s: %v", user, err)
		}
		sendMail(t, sess, "imap-verify "+user)
	}
	// Postfix took the client address and the login from XCLIENT (LOGIN=
	// xtext-decoded: "+" arrives as "+"), and the client's EHLO name.
	rs.waitLog(t, "postfix/postfix.log", "client=unknown[81.2.69.144]", "sasl_username=weird+user@example.test")
	rs.waitLog(t, "postfix/postfix.log", "client=unknown[81.2.69.144]", "sasl_username=alice@example.test")

	_, err = b.Login(withTimeout(t), realClient(203), "alice@example.test", "wrong")
	wantErr(t, err, ErrAuthFailed)
}

func TestRealSMTPAuth(t *testing.T) {
	rs := needReal(t)
	b := &SMTP{
		Opts:     Options{Address: rs.addr(rs.subPort), Logger: testLogger(t)},
		Verify:   VerifySMTPAuth,
		XCLIENT:  true,
		Hostname: "mailgate.test",
	}
	sess, err := b.Login(withTimeout(t), realClient(145), "alice@example.test", "alicepass")
	if err != nil {
		t.Fatal(err)
	}
	sendMail(t, sess, "smtp-auth")
	rs.waitLog(t, "postfix/postfix.log", "client=unknown[81.2.69.145]", "sasl_method=PLAIN", "sasl_username=alice@example.test")

	_, err = b.Login(withTimeout(t), realClient(204), "alice@example.test", "wrong")
	wantErr(t, err, ErrAuthFailed)
}

const realDovecotConf = `instance_name = mailgate-backend-%[1]s
base_dir = %[2]s/run
state_dir = %[2]s/state
protocols = imap pop3
listen = 127.0.0.1
ssl = no
log_path = %[2]s/dovecot.log
info_log_path = %[2]s/dovecot.log
auth_verbose = yes
imap_id_log = *
disable_plaintext_auth = no
auth_mechanisms = plain login
# Allow any character in user names, so "+" and UTF-8 reach the tests.
auth_username_chars =
login_trusted_networks = 127.0.0.0/8 ::1
mail_uid = 8
mail_gid = 8
first_valid_uid = 8
last_valid_uid = 8
first_valid_gid = 8
last_valid_gid = 8
mail_home = %[3]s/mail/%%d/%%n
mail_location = maildir:~/Maildir
namespace inbox {
  inbox = yes
}
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%%u %[2]s/users
}
userdb {
  driver = passwd-file
  args = username_format=%%u %[2]s/users
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = %[4]d
  }
  inet_listener imaps {
    port = 0
  }
}
service pop3-login {
  inet_listener pop3 {
    address = 127.0.0.1
    port = %[5]d
  }
  inet_listener pop3s {
    port = 0
  }
}
service auth {
  inet_listener auth-inet {
    address = 127.0.0.1
    port = %[6]d
  }
}
`

const realPostfixMain = `compatibility_level = 3.6
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
smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination
virtual_mailbox_domains = example.test
virtual_mailbox_maps = texthash:$config_directory/vmailbox
virtual_transport = discard:test
local_transport = error:local delivery disabled
default_transport = error:outbound delivery disabled
relay_transport = error:outbound delivery disabled
alias_maps =
alias_database =
biff = no
append_dot_mydomain = no
maillog_file = %[1]s/postfix.log
maillog_file_prefixes = %[2]s
`

const realPostfixMaster = `127.0.0.1:%[1]d inet n - n - - smtpd
127.0.0.1:%[2]d inet n - n - - smtpd
  -o syslog_name=postfix/submission
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_sasl_type=dovecot
  -o smtpd_sasl_path=inet:127.0.0.1:%[3]d
  -o smtpd_sasl_security_options=noanonymous
  -o smtpd_tls_security_level=none
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
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
`
