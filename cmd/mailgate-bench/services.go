package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/mailgate/mailgate/integration/mailstack"
)

// ngxMailModule is where Debian's libnginx-mod-mail installs the module.
const ngxMailModule = "/usr/lib/nginx/modules/ngx_mail_module.so"

// proc is a child process the suite started.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string // its stdout/stderr file
	done chan struct{}
}

func startProc(name, logFile string, env []string, bin string, args ...string) (*proc, error) {
	lf, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logFile, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); lf.Close(); close(p.done) }()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// stop asks the process to quit (SIGTERM, or SIGQUIT for nginx's
// graceful stop), then kills it after 10 s.
func (p *proc) stop(sig syscall.Signal) {
	if p == nil {
		return
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// waitPorts waits until every address accepts, or the process exited.
func (p *proc) waitPorts(addrs ...string) error {
	deadline := time.Now().Add(30 * time.Second)
	for _, a := range addrs {
		for {
			c, err := net.DialTimeout("tcp", a, time.Second)
			if err == nil {
				c.Close()
				break
			}
			select {
			case <-p.done:
				return fmt.Errorf("%s exited: %s", p.name, tail(p.log, 2000))
			default:
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s: %s never accepted", p.name, a)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

// tail returns the last n bytes of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// nginxPorts are the listeners of the bench nginx.
type nginxPorts struct{ IMAPS, POP3S, SMTPS int }

// startNginx writes a private mail-only nginx config in dir and starts
// nginx in the foreground (daemon off) so the suite owns its pid.
func startNginx(dir, authAddr string, st *mailstack.Stack, ports nginxPorts) (*proc, error) {
	bin, err := mailstack.LookPath("nginx")
	if err != nil {
		return nil, errors.New("nginx not installed (Debian: apt-get install nginx-light libnginx-mod-mail, or nginx libnginx-mod-mail)")
	}
	if _, err := os.Stat(ngxMailModule); err != nil {
		return nil, fmt.Errorf("nginx mail module missing at %s (Debian: apt-get install libnginx-mod-mail)", ngxMailModule)
	}
	conf := fmt.Sprintf(nginxConf, ngxMailModule, dir, authAddr, st.CertFile, st.KeyFile, ports.IMAPS, ports.POP3S, ports.SMTPS)
	confFile := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	p, err := startProc("nginx", filepath.Join(dir, "nginx.out"), nil, bin, "-p", dir, "-c", confFile, "-e", filepath.Join(dir, "nginx-error.log"))
	if err != nil {
		return nil, err
	}
	if err := p.waitPorts(mailstack.Addr(ports.IMAPS), mailstack.Addr(ports.POP3S), mailstack.Addr(ports.SMTPS)); err != nil {
		p.stop(syscall.SIGQUIT)
		return nil, fmt.Errorf("%w\n%s", err, tail(filepath.Join(dir, "nginx-error.log"), 2000))
	}
	return p, nil
}

// nginxConf: module, dir, auth_http address, cert, key, IMAPS, POP3S,
// SMTPS ports. Two workers for two cores, as Debian's "auto" would pick.
const nginxConf = `load_module %[1]s;
worker_processes auto;
worker_rlimit_nofile 65536;
daemon off;
pid %[2]s/nginx.pid;
error_log %[2]s/nginx-error.log error;
events {
    worker_connections 30000;
}
mail {
    server_name mail.example.test;
    auth_http %[3]s/auth;
    proxy_pass_error_message on;
    ssl_certificate %[4]s;
    ssl_certificate_key %[5]s;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache off;
    imap_capabilities IMAP4rev1 IDLE LITERAL+;
    server {
        listen 127.0.0.1:%[6]d ssl;
        protocol imap;
    }
    server {
        listen 127.0.0.1:%[7]d ssl;
        protocol pop3;
        pop3_auth plain;
    }
    server {
        listen 127.0.0.1:%[8]d ssl;
        protocol smtp;
        smtp_auth login plain;
        xclient on;
    }
}
`

// mailgatePorts are the listeners of the bench mailgate.
type mailgatePorts struct{ IMAPS, POP3S, SMTPS, Admin, Pprof int }

// mailgateConfig renders the bench config: the same certificate as
// Dovecot and nginx, loopback backends, 127.0.0.1 allowed (GB),
// 127.0.0.2 denied (RU); guard adds the refused-at-accept source
// 127.0.0.3 and trusts loopback otherwise, so the load is not banned.
// slots is guard.backend.max_concurrent (0: no cap).
func mailgateConfig(st *mailstack.Stack, p mailgatePorts, guard bool, slots int) string {
	g := ""
	if guard {
		g = fmt.Sprintf(`guard:
  trusted_networks: ["127.0.0.1/32", "127.0.0.2/32"]
  deny_networks: ["127.0.0.3/32"]
  connections: {max_total: 30000, max_preauth: 30000}
  backend: {max_concurrent: %d}
`, slots)
	}
	return fmt.Sprintf(`hostname: mail.example.test
log: {level: info, format: text}
listeners:
  - {name: imaps, protocol: imap, address: "127.0.0.1:%d", tls: implicit}
  - {name: pop3s, protocol: pop3, address: "127.0.0.1:%d", tls: implicit}
  - {name: smtps, protocol: smtp, address: "127.0.0.1:%d", tls: implicit}
backends:
  imap: {address: "127.0.0.1:%d", tls: none, forward_client: true}
  pop3: {address: "127.0.0.1:%d", tls: none, forward_client: true}
  smtp: {address: "127.0.0.1:%d", tls: none, verify: smtp-auth, xclient: true}
tls:
  certificates: [{cert: %q, key: %q}]
geo:
  overrides: {"127.0.0.1/32": GB, "127.0.0.2/32": RU, "127.0.0.3/32": RU}
policy:
  allow_countries: [GB]
limits: {greeting_delay: -1s}
admin: {address: "127.0.0.1:%d"}
%s`, p.IMAPS, p.POP3S, p.SMTPS, st.IMAP, st.POP3, st.Submission, st.CertFile, st.KeyFile, p.Admin, g)
}

// buildMailgate builds ./cmd/mailgate with the benchprofile tag (adds
// the pprof endpoint, see cmd/mailgate/profile.go) into dir.
func buildMailgate(ctx context.Context, repo, dir string) (string, error) {
	bin := filepath.Join(dir, "mailgate")
	cmd := exec.CommandContext(ctx, "go", "build", "-tags", "benchprofile", "-o", bin, "./cmd/mailgate")
	cmd.Dir = repo
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/mailgate: %v\n%s", err, out)
	}
	return bin, nil
}

// buildBase builds mailgate as of git revision rev (-base) into dir: the
// revision's tree is exported with git archive into dir/src, so neither
// the repository's work tree nor its worktree list changes.
func buildBase(ctx context.Context, repo, rev, dir string) (string, error) {
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return "", err
	}
	arch := exec.CommandContext(ctx, "git", "-C", repo, "archive", "--format=tar", rev)
	untar := exec.CommandContext(ctx, "tar", "-x", "-C", src)
	pipe, err := arch.StdoutPipe()
	if err != nil {
		return "", err
	}
	untar.Stdin = pipe
	var archErr strings.Builder
	arch.Stderr = &archErr
	if err := untar.Start(); err != nil {
		return "", err
	}
	if err := arch.Run(); err != nil {
		_ = untar.Wait()
		return "", fmt.Errorf("git archive %s: %v %s", rev, err, archErr.String())
	}
	if err := untar.Wait(); err != nil {
		return "", fmt.Errorf("tar: %v", err)
	}
	bin, err := buildMailgate(ctx, src, dir)
	if err != nil {
		return "", fmt.Errorf("-base %s: %w", rev, err)
	}
	return bin, nil
}

// startMailgate writes the config and starts mailgate serve. It tries
// the config with the guard section first and drops it if this build of
// mailgate does not know the section yet.
func startMailgate(ctx context.Context, bin, dir string, st *mailstack.Stack, ports mailgatePorts, extraEnv []string, slots int) (*proc, bool, error) {
	cfgFile := filepath.Join(dir, "mailgate.yaml")
	guard := true
	for _, g := range []bool{true, false} {
		guard = g
		if err := os.WriteFile(cfgFile, []byte(mailgateConfig(st, ports, g, slots)), 0o644); err != nil {
			return nil, false, err
		}
		out, err := exec.CommandContext(ctx, bin, "check-config", "-config", cfgFile).CombinedOutput()
		if err == nil {
			break
		}
		if !g {
			return nil, false, fmt.Errorf("mailgate check-config: %v\n%s", err, out)
		}
		warnf("mailgate rejects the guard section (%s); running without it, so refused-at-accept is not measured", strings.TrimSpace(string(out)))
	}
	env := append([]string{"MAILGATE_PPROF_ADDR=" + mailstack.Addr(ports.Pprof)}, extraEnv...)
	p, err := startProc("mailgate", filepath.Join(dir, "mailgate.log"), env, bin, "serve", "-config", cfgFile)
	if err != nil {
		return nil, guard, err
	}
	if err := p.waitPorts(mailstack.Addr(ports.IMAPS), mailstack.Addr(ports.POP3S), mailstack.Addr(ports.SMTPS)); err != nil {
		p.stop(syscall.SIGTERM)
		return nil, guard, err
	}
	return p, guard, nil
}

// repoRoot walks up from the working directory to the directory with
// go.mod of this module.
func repoRoot() (string, error) {
	d, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for range 32 {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && strings.Contains(string(b), "module github.com/mailgate/mailgate\n") {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			break
		}
		d = parent
	}
	return "", errors.New("run from inside the mailgate repository (go.mod not found)")
}
