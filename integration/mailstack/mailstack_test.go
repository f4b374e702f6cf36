package mailstack

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// need skips without Dovecot or root (fails with CI=true).
func need(t *testing.T) {
	t.Helper()
	var why string
	if m := Missing(Options{Postfix: true}); len(m) > 0 {
		why = "not installed: " + strings.Join(m, ", ")
	} else if os.Geteuid() != 0 {
		why = "Dovecot as configured here runs as root (mail uid 8)"
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal(why)
	}
	t.Skip(why)
}

// imapsLogin logs in over implicit TLS, trusting only certFile.
func imapsLogin(t *testing.T, port int, certFile, user, pass string) string {
	t.Helper()
	pem, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", Addr(port), &tls.Config{RootCAs: pool, ServerName: "imap.example.test"})
	if err != nil {
		t.Fatalf("IMAPS to Dovecot: %v", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	if l, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(l, "* OK") {
		t.Fatalf("greeting %q, %v", l, err)
	}
	fmt.Fprintf(c, "a LOGIN %q %q\r\n", user, pass)
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(l, "a ") {
			return strings.TrimSpace(l)
		}
	}
}

func TestStartStop(t *testing.T) {
	need(t)
	ctx := context.Background()
	s, err := Start(ctx, Options{Postfix: true, MaxSessions: 100})
	if err != nil {
		s.Stop()
		t.Fatal(err)
	}
	dir := s.Dir
	if got := imapsLogin(t, s.IMAPS, s.CertFile, "bob@example.test", "bobpass"); !strings.HasPrefix(got, "a OK") {
		t.Errorf("right password over IMAPS: %s", got)
	}
	if got := imapsLogin(t, s.IMAPS, s.CertFile, "bob@example.test", "wrong"); !strings.HasPrefix(got, "a NO") {
		t.Errorf("wrong password over IMAPS: %s", got)
	}
	for name, p := range map[string]int{"imap": s.IMAP, "pop3": s.POP3, "pop3s": s.POP3S, "smtp": s.SMTP, "submission": s.Submission, "smtps": s.SMTPS} {
		c, err := net.DialTimeout("tcp", Addr(p), 2*time.Second)
		if err != nil {
			t.Errorf("%s listener: %v", name, err)
			continue
		}
		c.Close()
	}
	if s.DovecotPID() <= 0 {
		t.Error("no Dovecot master pid")
	}
	s.Stop()
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("scratch dir left after Stop: %v", err)
	}
	if pid := readPid(filepath.Join(dir, "dovecot", "run", "master.pid")); pid != 0 {
		t.Errorf("Dovecot pid file still there after Stop (pid %d)", pid)
	}
}

func TestSelfSigned(t *testing.T) {
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	if err := SelfSigned(cert, key, "a.example.test", "b.example.test"); err != nil {
		t.Fatal(err)
	}
	kp, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(kp.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := leaf.VerifyHostname("b.example.test"); err != nil {
		t.Error(err)
	}
	if time.Until(leaf.NotAfter) < 24*time.Hour {
		t.Errorf("expires %v", leaf.NotAfter)
	}
}

func TestUsersLines(t *testing.T) {
	u := map[string]string{"b@x.test": "pb", "a@x.test": "pa"}
	if got := usersLines(u, "%s:{PLAIN}%s::::::\n"); got != "a@x.test:{PLAIN}pa::::::\nb@x.test:{PLAIN}pb::::::\n" {
		t.Errorf("passwd-file: %q", got)
	}
	if got := usersLines(u, "%s OK\n"); got != "a@x.test OK\nb@x.test OK\n" {
		t.Errorf("vmailbox: %q", got)
	}
}

// dialText opens a plaintext session and returns a line reader over it.
func dialText(t *testing.T, port int) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.DialTimeout("tcp", Addr(port), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	return c, bufio.NewReader(c)
}

// untilTagged sends cmd and returns every line up to the tagged reply.
func untilTagged(t *testing.T, c net.Conn, r *bufio.Reader, cmd string) string {
	t.Helper()
	fmt.Fprintf(c, "%s\r\n", cmd)
	var out strings.Builder
	for {
		l, err := r.ReadString('\n')
		out.WriteString(l)
		if err != nil {
			t.Fatalf("%s: %v after %q", cmd, err, out.String())
		}
		if strings.HasPrefix(l, strings.Fields(cmd)[0]+" ") {
			return out.String()
		}
	}
}

// TestStartTestOptions: the options the integration and backend tests
// rely on reach the daemons.
func TestStartTestOptions(t *testing.T) {
	need(t)
	dir, err := os.MkdirTemp("/tmp", "mgt")
	if err != nil {
		t.Fatal(err)
	}
	users := map[string]string{"weird+user@example.test": "p\"a\\ss wörd{5}", "bob@example.test": "bobpass"}
	s, err := Start(context.Background(), Options{
		Users: users, Postfix: true, Dir: dir, Name: "mailstack-test",
		NoTLS: true, Verbose: true, SpecialUse: true, AnyUserChars: true, MessageSizeLimit: 12345678,
	})
	defer s.Stop()
	if err != nil {
		t.Fatal(err)
	}
	if s.Dir != dir {
		t.Errorf("Dir = %q, want the given %q", s.Dir, dir)
	}
	if s.IMAPS != 0 || s.POP3S != 0 || s.SMTPS != 0 || s.CertFile != "" {
		t.Errorf("NoTLS still has IMAPS %d POP3S %d SMTPS %d cert %q", s.IMAPS, s.POP3S, s.SMTPS, s.CertFile)
	}

	c, r := dialText(t, s.IMAP)
	if l, _ := r.ReadString('\n'); strings.Contains(l, "STARTTLS") || !strings.HasPrefix(l, "* OK") {
		t.Errorf("NoTLS greeting %q: want no STARTTLS", l)
	}
	if got := untilTagged(t, c, r, `a LOGIN "weird+user@example.test" "p\"a\\ss wörd{5}"`); !strings.Contains(got, "a OK") {
		t.Fatalf("login with + in the name and quotes in the password: %q", got)
	}
	if got := untilTagged(t, c, r, `b LIST "" *`); !strings.Contains(got, `\Trash`) || !strings.Contains(got, `\Sent`) {
		t.Errorf("SpecialUse: LIST = %q, want Sent and Trash", got)
	}
	c2, r2 := dialText(t, s.IMAP)
	r2.ReadString('\n')
	if got := untilTagged(t, c2, r2, `a LOGIN "nobody@example.test" "x"`); !strings.Contains(got, "a NO") {
		t.Errorf("unknown user: %q", got)
	}

	sc, sr := dialText(t, s.SMTP)
	sr.ReadString('\n')
	fmt.Fprintf(sc, "EHLO client.test\r\n")
	var ehlo strings.Builder
	for {
		l, err := sr.ReadString('\n')
		ehlo.WriteString(l)
		if err != nil || strings.HasPrefix(l, "250 ") {
			break
		}
	}
	if !strings.Contains(ehlo.String(), "SIZE 12345678") {
		t.Errorf("MessageSizeLimit: EHLO = %q", ehlo.String())
	}
	if err := waitLog(s.DovecotLog, "unknown user", "nobody@example.test"); err != nil {
		t.Errorf("Verbose: %v", err)
	}
	if err := waitLog(s.PostfixLog, "connect from localhost[127.0.0.1]"); err != nil {
		t.Errorf("PostfixLog: %v", err)
	}
	if s.StartLog() == "" {
		t.Error("StartLog empty")
	}
}

// waitLog waits up to 10 s for a line of log() holding every part.
func waitLog(log func() string, parts ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return WaitLog(ctx, log, parts...)
}

// TestWatchdog: a process that starts a stack with Watchdog and exits
// without Stop leaves no daemon behind.
func TestWatchdog(t *testing.T) {
	if os.Getenv("MAILSTACK_WATCHDOG_CHILD") != "" {
		s, err := Start(context.Background(), Options{Postfix: true, NoTLS: true, Watchdog: true, Dir: os.Getenv("MAILSTACK_WATCHDOG_CHILD")})
		if err != nil {
			fmt.Println("start:", err)
			os.Exit(2)
		}
		fmt.Println("started", s.IMAP)
		os.Exit(0) // no Stop: the watchdog must clean up
	}
	need(t)
	dir, err := os.MkdirTemp("/tmp", "mgw")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	cmd := exec.Command(os.Args[0], "-test.run=^TestWatchdog$")
	cmd.Env = append(os.Environ(), "MAILSTACK_WATCHDOG_CHILD="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "started") {
		t.Fatalf("child: %v\n%s", err, out)
	}
	s := &Stack{Dir: dir, postfix: true}
	dpid := s.DovecotPID()
	ppid := readPid(filepath.Join(dir, "postfix", "spool", "pid", "master.pid"))
	if dpid <= 0 || ppid <= 0 {
		t.Fatalf("child left no pid files (dovecot %d, postfix %d)", dpid, ppid)
	}
	defer s.stopDaemons()
	deadline := time.Now().Add(30 * time.Second)
	for syscall.Kill(dpid, 0) == nil || syscall.Kill(ppid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("daemons still running 30s after their starter exited (dovecot %d, postfix %d)", dpid, ppid)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestBusyRetries: a daemon's bind failure is what makes Start retry
// with fresh ports; other failures are not retried.
func TestBusyRetries(t *testing.T) {
	s := &Stack{Dir: t.TempDir()}
	base := errors.New("dovecot exited")
	if errors.Is(s.busy(base), errPortBusy) {
		t.Fatal("busy without any log")
	}
	if err := os.MkdirAll(filepath.Join(s.Dir, "dovecot"), 0o755); err != nil {
		t.Fatal(err)
	}
	line := "Fatal: bind(127.0.0.1, 40001) failed: Address already in use\n"
	if err := os.WriteFile(filepath.Join(s.Dir, "dovecot", "dovecot.log"), []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.busy(base); !errors.Is(err, errPortBusy) || !errors.Is(err, base) {
		t.Fatalf("busy(%v) = %v, want errPortBusy wrapping it", base, err)
	}
}

func TestHasLine(t *testing.T) {
	log := "a: Login: user=<x>\nb: rip=1.2.3.4\n"
	for _, tc := range []struct {
		parts []string
		want  bool
	}{
		{[]string{"Login:", "user=<x>"}, true},
		{[]string{"Login:", "rip=1.2.3.4"}, false}, // on different lines
		{[]string{"rip="}, true},
		{[]string{"nowhere"}, false},
	} {
		if got := HasLine(log, tc.parts...); got != tc.want {
			t.Errorf("HasLine(%q) = %v, want %v", tc.parts, got, tc.want)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := WaitLog(ctx, func() string { return log }, "nowhere"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitLog for a missing line = %v, want the deadline", err)
	}
}

// TestFreePortsOutsideEphemeral: the ports the daemons are configured
// with lie outside the kernel's ephemeral range, where a port-0 bind
// elsewhere (another test, Pebble's DNS server) cannot take them before
// the daemon binds, and are not handed out twice.
func TestFreePortsOutsideEphemeral(t *testing.T) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		t.Skip(err)
	}
	var lo, hi int
	if _, err := fmt.Sscan(string(b), &lo, &hi); err != nil {
		t.Fatalf("ip_local_port_range %q: %v", b, err)
	}
	seen := map[int]bool{}
	for range 5 {
		ports, err := FreePorts(9)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ports {
			if p >= lo && p <= hi {
				t.Errorf("port %d is in the ephemeral range %d-%d", p, lo, hi)
			}
			if seen[p] {
				t.Errorf("port %d handed out twice", p)
			}
			seen[p] = true
		}
	}
}
