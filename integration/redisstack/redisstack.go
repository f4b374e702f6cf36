// Package redisstack starts a private redis-server (and redis-sentinel)
// on loopback ports for the fleet's integration tests: each with its own
// config file in a scratch directory, no persistence, not daemonized,
// stopped by its pid (and killed with the test process, Pdeathsig). The
// recipe is the project's verified one for Redis and Sentinel on this
// kind of machine (shared docs, real-services.md).
//
// Like mailstack, it imports nothing of mailgate but testport.
package redisstack

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mailgate/mailgate/integration/testport"
)

// ErrMissing: redis-server or redis-sentinel is not installed.
var ErrMissing = errors.New("redisstack: program not installed")

// Missing lists the programs that are not installed.
func Missing() []string {
	var out []string
	for _, p := range []string{"redis-server", "redis-sentinel"} {
		if _, err := exec.LookPath(p); err != nil {
			out = append(out, p)
		}
	}
	return out
}

// Server is one running redis-server or redis-sentinel.
type Server struct {
	Port int
	dir  string
	conf string
	prog string
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	log  string
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port)) }

// Start starts a redis-server in dir (which must exist) with extra
// config lines (a replicaof, an ACL user, ...), on a port from testport.
func Start(dir, extra string) (*Server, error) {
	return start("redis-server", dir, func(port int) string {
		return fmt.Sprintf("bind 127.0.0.1\nport %d\ndaemonize no\nsave \"\"\nappendonly no\ndir %s\nlogfile %s\n%s\n",
			port, dir, filepath.Join(dir, "redis.log"), extra)
	})
}

// StartSentinel starts a redis-sentinel in dir that monitors master (a
// host:port) under name, with quorum 1 and short timeouts, and extra
// config lines (sentinel auth-user, auth-pass).
func StartSentinel(dir, name, master, extra string) (*Server, error) {
	host, port, _ := net.SplitHostPort(master)
	return start("redis-sentinel", dir, func(p int) string {
		return fmt.Sprintf("bind 127.0.0.1\nport %d\ndaemonize no\ndir %s\nlogfile %s\n"+
			"sentinel monitor %s %s %s 1\nsentinel down-after-milliseconds %s 1000\nsentinel failover-timeout %s 5000\n%s\n",
			p, dir, filepath.Join(dir, "sentinel.log"), name, host, port, name, name, extra)
	})
}

func start(prog, dir string, conf func(port int) string) (*Server, error) {
	if _, err := exec.LookPath(prog); err != nil {
		return nil, fmt.Errorf("%w: %s", ErrMissing, prog)
	}
	var last error
	for range testport.Attempts {
		ports, err := testport.Take(1)
		if err != nil {
			return nil, err
		}
		s := &Server{Port: ports[0], dir: dir, prog: prog, conf: filepath.Join(dir, prog+".conf")}
		// Sentinel rewrites its config file: it must be writable.
		if err := os.WriteFile(s.conf, []byte(conf(s.Port)), 0o600); err != nil {
			return nil, err
		}
		s.log = filepath.Join(dir, strings.TrimPrefix(prog, "redis-")+".log")
		if prog == "redis-server" {
			s.log = filepath.Join(dir, "redis.log")
		}
		if last = s.Restart(); last == nil {
			return s, nil
		}
		if !testport.InUse(last.Error()) {
			return nil, last
		}
	}
	return nil, last
}

// Restart starts the program again with its config file (after Kill).
func (s *Server) Restart() error {
	cmd := exec.Command(s.prog, s.conf)
	cmd.Dir = s.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return fmt.Errorf("%s exited at start: %s", s.prog, s.Log())
		default:
		}
		if ping(s.Addr()) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.Kill()
	return fmt.Errorf("%s on port %d never answered PING: %s", s.prog, s.Port, s.Log())
}

// ping reports whether a server answers PING (any reply: one that wants
// a password answers too).
func ping(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && (strings.HasPrefix(line, "+PONG") || strings.HasPrefix(line, "-"))
}

// Kill stops the program at once (SIGKILL): a crash, not a shutdown.
func (s *Server) Kill() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Kill()
	<-done
}

// Log is the program's log file.
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.log)
	return string(b)
}
