//go:build integration

package integration

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// demoOffsets are the listener ports of `mailgate demo` relative to
// -port-base: IMAPS, IMAP, SMTPS, submission.
var demoOffsets = []int{993, 143, 465, 587}

// demoPortBase finds a base whose four demo ports are free now.
func demoPortBase(t *testing.T) int {
	t.Helper()
	for range 50 {
		base := 20000 + rand.IntN(30000)
		var ls []net.Listener
		ok := true
		for _, off := range demoOffsets {
			l, err := net.Listen("tcp4", addr(base+off))
			if err != nil {
				ok = false
				break
			}
			ls = append(ls, l)
		}
		for _, l := range ls {
			l.Close()
		}
		if ok {
			return base
		}
	}
	t.Fatal("no free port base for the demo")
	return 0
}

// TestDemo runs `mailgate demo` and follows the instructions it prints:
// the allowed curl login lists the INBOX, the same login from 127.0.0.2
// is denied, and a message sent through submission reads back over IMAPS.
func TestDemo(t *testing.T) {
	hs := need(t)
	if hs.buildErr != nil {
		t.Fatalf("mailgate binary unavailable: %v", hs.buildErr)
	}
	base := demoPortBase(t)
	out, errLog := &syncBuffer{}, &syncBuffer{}
	cmd := exec.Command(hs.mailgateBin, "demo", "-port-base", fmt.Sprint(base))
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
			t.Logf("demo stdout:\n%s\ndemo stderr:\n%s", out, errLog)
		}
	})
	imaps, sub := addr(base+993), addr(base+587)
	if !waitFor(func() bool { return accepting(imaps) && accepting(sub) }, 20*time.Second) {
		t.Fatalf("demo listeners never accepted; stderr:\n%s", errLog)
	}
	if !waitFor(func() bool { return strings.Contains(out.String(), "Ctrl-C stops") }, 10*time.Second) {
		t.Fatalf("demo instructions not printed; stdout:\n%s", out)
	}
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
