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
	"path/filepath"
	"strings"
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
