//go:build integration

package integration

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The container test builds the image from the repository's Dockerfile
// on its pull-free path (target prebuilt: a static binary from the build
// context, every stage FROM scratch) with podman, and runs it the way docs/operations.md
// tells an admin to: non-root, every capability dropped, read-only root
// file system, the config mounted read-only. The container shares the
// host's network so that it reaches the harness's Dovecot and Postfix on
// loopback; its listeners are on high ports (a non-root process without
// capabilities cannot bind below 1024 in the host's network namespace).

// containerWait bounds each wait on the container; podman starts a
// container in about a second on an idle machine, far longer on two busy
// cores.
const containerWait = 60 * time.Second

// needPodman returns podman's path or skips the test (fails in CI,
// where .ci/run installs it).
func needPodman(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("podman")
	if err != nil {
		if inCI() {
			t.Fatal("podman not installed (Debian: apt-get install podman; .ci/run installs it)")
		}
		t.Skip("podman not installed (Debian: apt-get install podman)")
	}
	return p
}

// podmanCmd runs podman with args, bounded, and returns its combined
// output.
func podmanCmd(bin string, timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("podman %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// imageIDs lists every image podman holds, intermediate ones included.
func imageIDs(t *testing.T, bin string) []string {
	t.Helper()
	out, err := podmanCmd(bin, time.Minute, "images", "-a", "-q", "--no-trunc")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(out)
}

// buildImage builds the image from the repository's Dockerfile with a
// build context holding only what the pull-free path reads: dist/ (the
// static binary and the CA roots) and docs/deploy/image/. It removes the
// image, and the intermediate stage images this build made, when the
// test ends.
func buildImage(t *testing.T, bin string) string {
	t.Helper()
	hs := need(t)
	ctxDir := t.TempDir()
	dist := filepath.Join(ctxDir, "dist")
	skel := filepath.Join(ctxDir, "docs", "deploy", "image")
	for _, d := range []string{dist, skel} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The Dockerfile's pull-free recipe: the same flags as its build stage.
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version=container-test",
		"-o", filepath.Join(dist, "mailgate"), "./cmd/mailgate")
	build.Dir = hs.repo
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("static build: %v\n%s", err, out)
	}
	copyFile(t, "/etc/ssl/certs/ca-certificates.crt", filepath.Join(dist, "ca-certificates.crt"))
	for _, f := range []string{"passwd", "group"} {
		copyFile(t, filepath.Join(hs.repo, "docs", "deploy", "image", f), filepath.Join(skel, f))
	}

	tag := "localhost/mailgate-it:" + randomName(t)
	before := imageIDs(t, bin)
	t.Cleanup(func() {
		if out, err := podmanCmd(bin, 2*time.Minute, "rmi", "-f", tag); err != nil {
			t.Logf("removing the image: %v\n%s", err, out)
		}
		// Stage images this build left behind, newest first (a child
		// before its parent).
		after := imageIDs(t, bin)
		for i := len(after) - 1; i >= 0; i-- {
			if !slices.Contains(before, after[i]) {
				podmanCmd(bin, time.Minute, "rmi", after[i])
			}
		}
	})
	// --format docker keeps the HEALTHCHECK (OCI image configs have none).
	if out, err := podmanCmd(bin, 10*time.Minute, "build", "--format", "docker",
		"--target", "prebuilt", "--build-arg", "VERSION=container-test",
		"-f", filepath.Join(hs.repo, "Dockerfile"), "-t", tag, ctxDir); err != nil {
		t.Fatalf("podman build: %v", err)
	} else if !strings.Contains(out, "Successfully tagged") {
		t.Fatalf("podman build said:\n%s", out)
	}
	size, err := podmanCmd(bin, time.Minute, "image", "inspect", "--format", "{{.Size}}", tag)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("image %s: %s bytes", tag, strings.TrimSpace(size))
	return tag
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func randomName(t *testing.T) string {
	t.Helper()
	b := make([]byte, 6)
	if _, err := io.ReadFull(rand.Reader, b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// ulimit is the --ulimit value podman needs here: the host's soft limit,
// at most 4096 (podman refuses values above the host's).
func ulimit(t *testing.T, resource int) string {
	t.Helper()
	var r syscall.Rlimit
	if err := syscall.Getrlimit(resource, &r); err != nil {
		t.Fatal(err)
	}
	n := min(r.Cur, 4096)
	return fmt.Sprintf("%d:%d", n, n)
}

// container is one running mailgate container.
type container struct {
	t      *testing.T
	bin    string // podman
	name   string
	cfgDir string // mounted read-only at /etc/mailgate
}

// log returns what the container logged so far (mailgate's stderr).
func (c *container) log() string {
	out, _ := podmanCmd(c.bin, time.Minute, "logs", c.name)
	return out
}

// waitLog waits until the container's log has substr count times.
func (c *container) waitLog(substr string, count int) {
	c.t.Helper()
	if !waitForEvery(func() bool { return strings.Count(c.log(), substr) >= count }, containerWait, 250*time.Millisecond) {
		c.t.Fatalf("container log never showed %q %d times; log:\n%s", substr, count, c.log())
	}
}

// state returns the container's status and exit code.
func (c *container) state() (string, int) {
	out, err := podmanCmd(c.bin, time.Minute, "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", c.name)
	if err != nil {
		return "gone", -1
	}
	f := strings.Fields(out)
	if len(f) != 2 {
		return "unknown: " + out, -1
	}
	code, _ := strconv.Atoi(f[1])
	return f[0], code
}

// writeConfig writes the config the container reads; the directory and
// file must be readable by the container's user (65532).
func (c *container) writeConfig(yaml string) {
	c.t.Helper()
	if err := os.WriteFile(filepath.Join(c.cfgDir, "mailgate.yaml"), []byte(yaml), 0o644); err != nil {
		c.t.Fatal(err)
	}
}

// runContainer starts the image with cfg and waits until every listener
// accepts. A port taken meanwhile by another process makes it pick new
// ones and try again.
func runContainer(t *testing.T, bin, image string, cfg *cfg, extra func() string) (*container, error) {
	t.Helper()
	cfgDir := t.TempDir()
	if err := os.Chmod(cfgDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for attempt := 1; ; attempt++ {
		c := &container{t: t, bin: bin, name: "mailgate-it-" + randomName(t), cfgDir: cfgDir}
		cfg.Extra = extra()
		c.writeConfig(cfg.YAML())
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("container %s log:\n%s", c.name, c.log())
			}
			// -v: the anonymous volume for /var/lib/mailgate goes too.
			podmanCmd(bin, 2*time.Minute, "rm", "-f", "-v", c.name)
		})
		args := []string{"run", "-d", "--name", c.name}
		if runc, err := exec.LookPath("runc"); err == nil {
			// Debian 12's crun refuses hosts with cgroup v1 and v2
			// mounted side by side ("cgroups in hybrid mode not
			// supported"); runc runs there and everywhere else.
			args = append(args, "--runtime", runc)
		}
		if _, err := podmanCmd(bin, 5*time.Minute, append(args,
			"--network", "host",
			"--cap-drop", "ALL",
			"--user", "65532:65532",
			"--read-only",
			"--ulimit", "nofile="+ulimit(t, syscall.RLIMIT_NOFILE),
			"--ulimit", "nproc="+ulimit(t, 6 /* RLIMIT_NPROC */),
			"-v", cfgDir+":/etc/mailgate:ro",
			image)...); err != nil {
			return nil, err
		}
		ready := func() (bool, string) {
			if st, _ := c.state(); st != "running" {
				return true, st
			}
			for _, a := range []string{
				addr(cfg.IMAPS), addr(cfg.IMAP), addr(cfg.IMAPSLB), addr(cfg.POP3S),
				addr(cfg.POP3SLB), addr(cfg.SMTPS), addr(cfg.SMTPSLB), addr(cfg.Submission),
			} {
				if !accepting(a) {
					return false, ""
				}
			}
			return true, ""
		}
		var exited string
		ok := waitForEvery(func() bool {
			done, st := ready()
			exited = st
			return done
		}, containerWait, 250*time.Millisecond)
		if ok && exited == "" {
			return c, nil
		}
		log := c.log()
		if attempt < 3 && strings.Contains(log, "address already in use") {
			t.Logf("a listener port was taken; picking new ones")
			podmanCmd(bin, 2*time.Minute, "rm", "-f", "-v", c.name)
			cfg.pickPorts(t)
			continue
		}
		if exited != "" {
			return nil, fmt.Errorf("container %s during start-up; log:\n%s", exited, log)
		}
		return nil, fmt.Errorf("container listeners never accepted; log:\n%s", log)
	}
}

// waitForEvery is waitFor with its own polling interval: each poll here
// runs podman, which is not free on two busy cores.
func waitForEvery(cond func() bool, timeout, every time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(every)
	}
}

// TestContainerImage: the image built from the repository's Dockerfile
// (pull-free path) runs as 65532 with no capabilities and a read-only
// root; IMAPS, POP3S and submission logins pass through it to the real
// Dovecot and Postfix; its HEALTHCHECK says healthy; `podman kill
// --signal HUP` reloads a changed policy; `podman stop` says goodbye to a
// session still logging in, lets a logged-in one finish, and the
// container exits 0.
func TestContainerImage(t *testing.T) {
	hs := need(t)
	bin := needPodman(t)
	const imapUser, popUser, smtpUser = "bob@example.test", "carol@example.test", "alice@example.test"
	resetMailbox(t, imapUser)

	image := buildImage(t, bin)
	cfg := newCfg(t)
	// The admin listener (for the HEALTHCHECK) on a port of its own: the
	// container shares the host's network with the other tests.
	extra := func() string {
		p, err := freePorts(1)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("drain_timeout: 120s\nadmin: {address: \"127.0.0.1:%d\"}\n", p[0])
	}
	c, err := runContainer(t, bin, image, cfg, extra)
	if err != nil {
		t.Fatal(err)
	}

	// The process inside is the unprivileged user, with no capability.
	if out, err := podmanCmd(bin, time.Minute, "top", c.name, "user", "huser", "capeff"); err != nil {
		t.Logf("podman top unavailable here: %v", err)
	} else if !strings.Contains(out, "65532") || !strings.Contains(out, "none") {
		t.Errorf("container process is not 65532 without capabilities:\n%s", out)
	}

	// HEALTHCHECK: mailgate health inside the container asks /readyz.
	if !waitForEvery(func() bool {
		_, err := podmanCmd(bin, time.Minute, "healthcheck", "run", c.name)
		return err == nil
	}, containerWait, time.Second) {
		out, err := podmanCmd(bin, time.Minute, "healthcheck", "run", c.name)
		t.Fatalf("healthcheck never healthy: %v\n%s", err, out)
	}

	// Logins through the container with Python's clients.
	msg := makeMessage(smtpUser, imapUser, "through the container", 2000)
	out, err := python(t, `
import imaplib, poplib, smtplib, ssl, sys
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
imaps, pop3s, sub = (int(p) for p in sys.argv[1:4])
r = []
c = imaplib.IMAP4_SSL("127.0.0.1", imaps, ssl_context=ctx, timeout=60)
r += [c.login(sys.argv[4], sys.argv[5])[0], c.select("INBOX")[0], c.logout()[0]]
p = poplib.POP3_SSL("127.0.0.1", pop3s, context=ctx, timeout=60)
p.user(sys.argv[6])
r += [p.pass_(sys.argv[7]).decode().split()[0], p.quit().decode().split()[0]]
s = smtplib.SMTP("127.0.0.1", sub, timeout=60)
s.ehlo("client.example.test")
s.starttls(context=ctx)
s.ehlo("client.example.test")
r += [str(s.login(sys.argv[8], sys.argv[9])[0])]
s.sendmail(sys.argv[8], [sys.argv[4]], open(sys.argv[10], "rb").read())
r += [str(s.quit()[0])]
print(" ".join(r))
`, itoa(cfg.IMAPS), itoa(cfg.POP3S), itoa(cfg.Submission), imapUser, users[imapUser],
		popUser, users[popUser], smtpUser, users[smtpUser], writeTemp(t, msg))
	if err != nil {
		t.Fatalf("python clients: %v\n%s", err, out)
	}
	if got, want := strings.TrimSpace(out), "OK OK BYE +OK +OK 235 221"; got != want {
		t.Fatalf("client results = %q, want %q", got, want)
	}
	c.waitLog("AUTHPASS", 3)
	if !waitForEvery(func() bool { return countDirect(t, imapUser) > 0 }, containerWait, 500*time.Millisecond) {
		t.Fatalf("the message sent through the container never reached %s; postfix log:\n%s", imapUser, hs.postfixLog())
	}

	// A session logged in before the reload and the stop.
	spliced := imapDial(t, addr(cfg.IMAPS), true, imapUser, users[imapUser], nil)
	if _, err := spliced.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}

	// SIGHUP through podman reloads a changed policy: 127.0.0.1 is GB,
	// now denied.
	cfg.Allow = []string{"US"}
	c.writeConfig(cfg.YAML())
	if out, err := podmanCmd(bin, time.Minute, "kill", "--signal", "HUP", c.name); err != nil {
		t.Fatalf("podman kill --signal HUP: %v\n%s", err, out)
	}
	c.waitLog(reloadOK, 1)
	if r := imapLoginRaw(t, "", addr(cfg.IMAPS), "", imapUser, users[imapUser]); !strings.HasPrefix(r, "a1 NO [AUTHENTICATIONFAILED]") {
		t.Fatalf("login after the reload to allow [US] = %q, want NO [AUTHENTICATIONFAILED]", r)
	}
	c.waitLog("COUNTRYFAILED", 1)
	if err := spliced.Noop().Wait(); err != nil {
		t.Fatalf("session from before the reload broke: %v", err)
	}

	// podman stop: SIGTERM drains. A session still logging in gets the
	// goodbye at once; the logged-in one carries on and ends on its own.
	waiting := newLineConn(t, dialFrom(t, "", addr(cfg.IMAPS)))
	waiting.startTLS()
	if g := waiting.line(); !strings.HasPrefix(g, "* OK") {
		t.Fatalf("greeting = %q", g)
	}
	stopped := make(chan error, 1)
	go func() {
		// -t beyond drain_timeout, as docs/operations.md says.
		_, err := podmanCmd(bin, 5*time.Minute, "stop", "-t", "200", c.name)
		stopped <- err
	}()
	if got := waiting.line(); !strings.HasPrefix(got, "* BYE") {
		t.Errorf("session still logging in got %q on podman stop, want * BYE", got)
	}
	c.waitLog("draining", 1)
	select {
	case err := <-stopped:
		t.Fatalf("container stopped with a session still open (%v); log:\n%s", err, c.log())
	default:
	}
	if err := spliced.Noop().Wait(); err != nil {
		t.Fatalf("logged-in session broke during the drain: %v", err)
	}
	if err := spliced.Logout().Wait(); err != nil {
		t.Fatalf("logout during the drain: %v", err)
	}
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(3 * time.Minute):
		t.Fatal("podman stop did not return after the last session ended")
	}
	if st, code := c.state(); st != "exited" || code != 0 {
		t.Fatalf("after podman stop the container is %s with exit code %d, want exited 0; log:\n%s", st, code, c.log())
	}
	log := c.log()
	for _, p := range []string{users[imapUser], users[popUser], users[smtpUser]} {
		if strings.Contains(log, p) {
			t.Errorf("the container logged a password")
		}
	}
}
