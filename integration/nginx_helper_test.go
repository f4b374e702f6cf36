//go:build integration

package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailgate/mailgate/integration/mailstack"
)

// ngxMailModule is where Debian's libnginx-mod-mail installs the mail
// module.
const ngxMailModule = "/usr/lib/nginx/modules/ngx_mail_module.so"

// needNginx returns the real nginx binary; without nginx or its mail
// module the test is skipped, except in CI where it fails (.ci/run
// installs nginx libnginx-mod-mail).
func needNginx(t *testing.T) string {
	t.Helper()
	bin, err := mailstack.LookPath("nginx")
	if err == nil {
		_, err = os.Stat(ngxMailModule)
	}
	if err != nil {
		msg := "nginx with the mail module not installed (Debian: apt-get install nginx libnginx-mod-mail): " + err.Error()
		if inCI() {
			t.Fatal(msg + "; CI=true")
		}
		t.Skip(msg)
	}
	return bin
}

// nginxProc is a private nginx the test started in the foreground.
type nginxProc struct {
	dir  string
	cmd  *exec.Cmd
	done chan struct{}
}

// startNginx runs the real nginx with mailBlock (a `mail {}` block) under
// a private prefix in the foreground (daemon off, so the test owns its
// pid), waits until every address in listen accepts, and stops it
// (SIGQUIT, nginx's graceful stop) when the test ends.
func startNginx(t *testing.T, mailBlock string, listen ...string) *nginxProc {
	t.Helper()
	bin := needNginx(t)
	dir := t.TempDir()
	conf := fmt.Sprintf(`load_module %s;
worker_processes 1;
daemon off;
pid %s/nginx.pid;
error_log %s/error.log info;
events {
    worker_connections 256;
}
%s`, ngxMailModule, dir, dir, mailBlock)
	confFile := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := os.Create(filepath.Join(dir, "nginx.out"))
	if err != nil {
		t.Fatal(err)
	}
	n := &nginxProc{dir: dir, done: make(chan struct{}),
		cmd: exec.Command(bin, "-p", dir, "-c", confFile, "-e", filepath.Join(dir, "error.log"))}
	n.cmd.Stdout, n.cmd.Stderr = out, out
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { n.cmd.Wait(); out.Close(); close(n.done) }()
	t.Cleanup(func() {
		n.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-n.done:
		case <-time.After(10 * time.Second):
			n.cmd.Process.Kill()
			<-n.done
		}
		if t.Failed() {
			t.Logf("nginx error log:\n%s", n.errorLog())
		}
	})
	for _, a := range listen {
		if !waitFor(func() bool {
			select {
			case <-n.done:
				return true
			default:
			}
			return accepting(a)
		}, eventually) || !accepting(a) {
			t.Fatalf("nginx never accepted on %s; config:\n%s\nerror log:\n%s", a, conf, n.errorLog())
		}
	}
	return n
}

func (n *nginxProc) errorLog() string {
	b, _ := os.ReadFile(filepath.Join(n.dir, "error.log"))
	o, _ := os.ReadFile(filepath.Join(n.dir, "nginx.out"))
	return string(b) + string(o)
}

// docNginxBlock is the `mail {}` block docs/nginx-adapter.md gives the
// admin, verbatim but for what each site has of its own: the ports (993,
// 995, 465, 587) become the test's loopback ports, the auth_http address
// the adapter's, the certificate the test's and the secret the test's.
// A placeholder the page no longer has fails the test: the page and the
// test cannot drift apart.
func docNginxBlock(t *testing.T, repo string, r map[string]string) string {
	t.Helper()
	page, err := os.ReadFile(filepath.Join(repo, "docs", "nginx-adapter.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```nginx\n(mail \\{.*?\n\\})\n```").FindSubmatch(page)
	if m == nil {
		t.Fatal("docs/nginx-adapter.md has no ```nginx block with the mail {} block")
	}
	block := string(m[1])
	for from, to := range r {
		if !strings.Contains(block, from) {
			t.Fatalf("docs/nginx-adapter.md's mail {} block no longer has %q", from)
		}
		block = strings.ReplaceAll(block, from, to)
	}
	return block
}
