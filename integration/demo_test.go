//go:build integration

package integration

import (
	"fmt"
	"math/rand/v2"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailgate/mailgate/integration/testport"
)

// demoOffsets are the listener ports of `mailgate demo` relative to
// -port-base: IMAPS, IMAP, SMTPS, submission.
var demoOffsets = []int{993, 143, 465, 587}

// demoPortBase finds a base whose four demo ports testport hands out
// (outside the ephemeral range, not handed out before, free now): the
// demo binds them itself, so they cannot be passed as listeners. Bases
// are tried at random: testport hands out ports in order from a random
// start, so a base derived from its next port has its other ports among
// those handed out before, and a run that had used a few hundred ports
// (or started just past the ephemeral range) found no base at all.
func demoPortBase(t *testing.T) int {
	t.Helper()
	lo, hi := 1024-slices.Min(demoOffsets), 65535-slices.Max(demoOffsets)
	for range 1000 {
		base := lo + rand.IntN(hi-lo+1)
		ports := make([]int, len(demoOffsets))
		for i, off := range demoOffsets {
			ports[i] = base + off
		}
		if testport.Claim(ports...) == nil {
			return base
		}
	}
	t.Fatal("no free port base for the demo")
	return 0
}

// startDemo runs `mailgate demo` on a fresh port base until its IMAPS and
// submission listeners accept and it has printed its instructions; when
// it reports a port taken (by a program outside the tests), it starts
// again on another base. It returns the base and the demo's output.
func startDemo(t *testing.T, bin string) (base int, out, errLog *syncBuffer) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		base = demoPortBase(t)
		out, errLog = &syncBuffer{}, &syncBuffer{}
		cmd := exec.Command(bin, "demo", "-port-base", fmt.Sprint(base))
		cmd.Stdout, cmd.Stderr = out, errLog
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		t.Cleanup(func() {
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(15 * time.Second):
				cmd.Process.Kill()
				<-done
			}
			if t.Failed() {
				t.Logf("demo (port base %d) stdout:\n%s\ndemo stderr:\n%s", base, out, errLog)
			}
		})
		exited := func() bool {
			select {
			case <-done:
				return true
			default:
				return false
			}
		}
		imaps, sub := addr(base+993), addr(base+587)
		up := func() bool {
			pid := cmd.Process.Pid
			return procListening(pid, imaps) && procListening(pid, sub) && accepting(imaps) && accepting(sub)
		}
		waitFor(func() bool { return exited() || up() }, eventually)
		if exited() {
			if attempt < testport.Attempts && testport.InUse(errLog.String()) {
				t.Logf("a demo port was taken (port base %d); trying another base", base)
				continue
			}
			t.Fatalf("demo exited during start-up; stderr:\n%s", errLog)
		}
		if !up() {
			t.Fatalf("demo listeners never accepted; stderr:\n%s", errLog)
		}
		if !waitFor(func() bool { return strings.Contains(out.String(), "Ctrl-C stops") }, eventually) {
			t.Fatalf("demo instructions not printed; stdout:\n%s", out)
		}
		return base, out, errLog
	}
}

// TestDemo runs `mailgate demo` and follows the instructions it prints:
// the allowed curl login lists the INBOX, the same login from 127.0.0.2
// is denied, and a message sent through submission reads back over IMAPS.
func TestDemo(t *testing.T) {
	hs := need(t)
	if hs.buildErr != nil {
		t.Fatalf("mailgate binary unavailable: %v", hs.buildErr)
	}
	base, out, errLog := startDemo(t, hs.mailgateBin)
	imaps, sub := addr(base+993), addr(base+587)
	for _, want := range []string{"imaps://" + imaps + "/INBOX", "--interface 127.0.0.2", "smtp://" + sub} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo instructions lack %q", want)
		}
	}

	cred := "alice@example.test:alicepass"
	list, err := runTool(t, "curl", "-sS", "-k", "--max-time", "30", "--url", "imaps://"+imaps+"/INBOX", "--user", cred)
	if err != nil {
		t.Fatalf("allowed demo login: %v\n%s", err, list)
	}
	if _, err := runTool(t, "curl", "-sS", "-k", "--max-time", "30", "--interface", ruLocal, "--url", "imaps://"+imaps+"/INBOX", "--user", cred); err == nil {
		t.Fatal("demo login from 127.0.0.2 (RU) succeeded")
	}
	msg := "Subject: hello from the integration test\r\n\r\nhi from the demo\r\n"
	if o, err := runTool(t, "curl", "-sS", "-k", "--max-time", "30", "--ssl-reqd", "--url", "smtp://"+sub, "--user", cred,
		"--mail-from", "alice@example.test", "--mail-rcpt", "alice@example.test", "--upload-file", writeTemp(t, []byte(msg))); err != nil {
		t.Fatalf("demo submission: %v\n%s", err, o)
	}
	got, err := runTool(t, "curl", "-sS", "-k", "--max-time", "30", "--url", "imaps://"+imaps+"/INBOX;UID=2", "--user", cred)
	if err != nil {
		t.Fatalf("reading the message back: %v\n%s", err, got)
	}
	if got != msg {
		t.Fatalf("message read back = %q, want %q", got, msg)
	}
	for _, ev := range []string{"AUTHPASS", "COUNTRYFAILED"} {
		if !strings.Contains(errLog.String(), ev) {
			t.Errorf("demo log lacks %s", ev)
		}
	}
	if strings.Contains(errLog.String(), "level=WARN msg=\"failed to read command") {
		t.Errorf("demo backend noise in the log:\n%s", errLog)
	}
}

// TestDemoPortBaseAfterManyPorts: the demo still finds a port base when
// the run has already handed out many ports, as a whole integration run
// has by the time TestDemo comes (a CI run failed "no free port base").
func TestDemoPortBaseAfterManyPorts(t *testing.T) {
	if _, err := freePorts(1500); err != nil {
		t.Fatal(err)
	}
	base := demoPortBase(t)
	for _, off := range demoOffsets {
		if p := base + off; p < 1024 || p > 65535 {
			t.Fatalf("base %d gives port %d", base, p)
		}
	}
}
