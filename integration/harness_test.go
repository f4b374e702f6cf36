//go:build integration

// Package integration runs the real mailgate binary between real clients
// (go-imap, Python's imaplib/poplib/smtplib, curl, swaks) and a real Dovecot
// and Postfix that TestMain starts on loopback ports through
// integration/mailstack, with a private configuration in a scratch
// directory. Dovecot and Postfix are started once per package run, not
// per test: each costs seconds to start and stop.
package integration

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/integration/mailstack"
	"github.com/mailgate/mailgate/integration/testport"
)

// Users in Dovecot's passwd-file; Postfix accepts mail for each of them.
var users = map[string]string{
	"alice@example.test": "alicepass",
	"bob@example.test":   "bobpass",
	"carol@example.test": "carolpass",
}

// harness is the state TestMain sets up once for all tests.
type harness struct {
	dir   string // scratch directory (short, mode 0755, under /tmp)
	repo  string // repository root
	stack *mailstack.Stack

	imapPort, pop3Port, lmtpPort, authPort int // Dovecot listeners
	smtpPort, subPort                      int // Postfix: plain MX-style smtpd, and SASL submission

	mailgateBin string // built once from ./cmd/mailgate
	buildErr    error  // why the binary is missing; tests needing it fail
	// geoDB is the embedded geo database, decompressed once; launch lists
	// it in every config that has no geo section (see geoSection).
	geoDB string
}

var (
	// h is nil when the backends are unavailable; skipReason says why.
	h          *harness
	skipReason string
)

// inCI reports whether missing services must fail rather than skip.
func inCI() bool { return os.Getenv("CI") == "true" }

// stackOptions is what the tests rely on: plaintext backends (mailgate
// terminates TLS), the auth lines and IMAP ID fields in Dovecot's log,
// Drafts/Sent/Trash, the SASL submission listener, 25 MB messages, and
// no daemons left behind if the test binary dies.
func stackOptions(dir string) mailstack.Options {
	return mailstack.Options{
		Users:      users,
		Postfix:    true,
		Dir:        dir,
		Name:       "mailgate-it",
		NoTLS:      true,
		Verbose:    true,
		SpecialUse: true,
		Watchdog:   true,
	}
}

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	missing := mailstack.Missing(mailstack.Options{Postfix: true})
	if _, err := lookPath("postconf"); err != nil {
		missing = append(missing, "postconf")
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
		defer hs.stack.Stop()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration: starting the backends failed:", err)
		if hs != nil {
			fmt.Fprintln(os.Stderr, "--- dovecot log ---\n"+hs.dovecotLog())
			fmt.Fprintln(os.Stderr, "--- postfix log ---\n"+hs.postfixLog())
			fmt.Fprintln(os.Stderr, "--- start log ---\n"+hs.stack.StartLog())
		}
		return 1
	}
	h = hs
	code := m.Run()
	if code != 0 {
		fmt.Fprintf(os.Stderr, "integration: logs kept in %s (dovecot/dovecot.log, postfix/postfix.log)\n", hs.dir)
		hs.stack.Keep = true
	}
	return code
}

// lookPath finds programs that live in sbin, which may not be on a test
// runner's PATH.
func lookPath(name string) (string, error) { return mailstack.LookPath(name) }

// freePorts picks n distinct loopback ports for mailgate (or another
// program the test starts) to bind: outside the kernel's ephemeral range,
// where no port-0 bind can take them, never handed out twice, and free
// now (mailstack.FreePorts, testport.Take). A listener the test process
// serves itself needs none: listen on 127.0.0.1:0 and use the listener.
func freePorts(n int) ([]int, error) { return mailstack.FreePorts(n) }

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

// setup starts the daemons and builds mailgate into the same scratch
// directory. On error the returned harness (if not nil) must still be
// stopped.
func setup() (*harness, error) {
	// Daemon users must enter the directory (mailstack makes it 0755),
	// and unix socket paths are limited to 108 bytes: a short directory
	// under /tmp, not t.TempDir.
	dir, err := os.MkdirTemp("/tmp", "mg")
	if err != nil {
		return nil, err
	}
	repo, err := filepath.Abs("..")
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	hs := &harness{dir: dir, repo: repo, stack: &mailstack.Stack{Dir: dir}}

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
			return
		}
		hs.geoDB = filepath.Join(dir, "embedded-geo.mmdb")
		if err := gunzipFile(filepath.Join(repo, embeddedGeoGzip), hs.geoDB); err != nil {
			hs.buildErr = fmt.Errorf("decompressing the embedded geo database: %w", err)
		}
	}()
	defer func() { <-built }()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	st, err := mailstack.Start(ctx, stackOptions(dir))
	if st != nil {
		hs.stack = st
	}
	if err != nil {
		return hs, err
	}
	hs.imapPort, hs.pop3Port, hs.lmtpPort, hs.authPort = st.IMAP, st.POP3, st.LMTP, st.Auth
	hs.smtpPort, hs.subPort = st.SMTP, st.Submission
	return hs, nil
}

// dovecotConf is Dovecot's configuration file, for doveadm -c.
func (hs *harness) dovecotConf() string { return hs.stack.DovecotConf() }

// dovecotLog returns Dovecot's whole log so far.
func (hs *harness) dovecotLog() string { return hs.stack.DovecotLog() }

// postfixLog returns Postfix's whole log so far.
func (hs *harness) postfixLog() string { return hs.stack.PostfixLog() }

// closedPort returns a loopback port that refuses connections for the
// rest of the test: a TCP socket bound to it but never listening
// (testport.Refused). A port that was merely free could be taken by
// another process meanwhile.
func closedPort(t testing.TB) int {
	t.Helper()
	a, closeFn, err := testport.Refused()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeFn() })
	_, p, _ := net.SplitHostPort(a)
	port, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// eventually is how long a test waits for something that should happen
// soon (a process listening, a log line, a delivery). It is long on
// purpose: waiting costs nothing when the thing happens, and on a busy
// machine (2 cores, the race detector, other test packages and jobs) a
// race-built mailgate has been seen to take over 15 s just to start.
const eventually = 60 * time.Second

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

func addr(port int) string { return mailstack.Addr(port) }

// sortedUsers lists the accounts in users, sorted.
func sortedUsers() []string {
	out := make([]string, 0, len(users))
	for u := range users {
		out = append(out, u)
	}
	sort.Strings(out)
	return out
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
func hasLine(log string, parts ...string) bool { return mailstack.HasLine(log, parts...) }
