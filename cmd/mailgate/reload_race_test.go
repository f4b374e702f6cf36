package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mailgate/mailgate/cmd/mailgate/internal/demo"
	"github.com/mailgate/mailgate/internal/testwait"
)

// reloadEnv is a running gateway in front of the demo backends with its
// admin listener served for real on a loopback port, as `mailgate serve`
// starts it.
type reloadEnv struct {
	g     *gateway
	log   *syncBuf // everything the gateway logged
	admin string   // http://host:port of the admin listener
	token string
	mk    func() *Config // a fresh config like the running one
	// hook, when set, is what POST /reload loads instead of mk().
	hook atomic.Pointer[func() (*Config, error)]
}

const reloadTestToken = "reload-test-token-0123456789"

func startReloadEnv(t *testing.T) *reloadEnv {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	b, err := demo.Start(ctx, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	pop3, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pop3.Close() })
	e := &reloadEnv{log: &syncBuf{}, token: reloadTestToken,
		mk: func() *Config { return opsConfig(b, pop3.Addr().String()) }}
	log := slog.New(slog.NewTextHandler(e.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if e.g, err = startGateway(e.mk(), log); err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(e.token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	load := func() (*Config, error) {
		if h := e.hook.Load(); h != nil {
			return (*h)()
		}
		return e.mk(), nil
	}
	stopOps, err := startOps(e.g, AdminConfig{Address: "127.0.0.1:0", TokenFile: tokenFile}, load)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stopOps)
	m := regexp.MustCompile(`msg="admin listening" .*address=(127\.0\.0\.1:\d+)`).FindStringSubmatch(e.log.String())
	if m == nil {
		t.Fatalf("admin listener address not logged:\n%s", e.log)
	}
	e.admin = "http://" + m[1]
	return e
}

// tryIMAPLogin logs in to the IMAP listener at addr and returns the
// tagged reply; unlike imapLogin it may run outside the test goroutine.
func tryIMAPLogin(addr, user, pass string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	if l, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(l, "* OK") {
		return l, fmt.Errorf("greeting: %v", err)
	}
	fmt.Fprintf(c, "a LOGIN %s %s\r\n", user, pass)
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			return l, err
		}
		if strings.HasPrefix(l, "a ") {
			fmt.Fprintf(c, "b LOGOUT\r\n")
			return l, nil
		}
	}
}

// do sends one admin request and returns its status and body.
func (e *reloadEnv) do(method, path string) (int, string, error) {
	req, err := http.NewRequest(method, e.admin+path, nil)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Authorization", "Bearer "+e.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// Reloads from both paths (SIGHUP through the signals loop, POST /reload)
// run while everything that reads the running state reads it: /metrics,
// /readyz, the guard's admin API, logins, and the signals loop itself,
// which reads the drain timeout when SIGTERM arrives. Under -race this
// fails on a gateway whose signals loop reads the state without the lock
// a reload writes it under. Two reloads never run at once.
func TestReloadRacesNothing(t *testing.T) {
	e := startReloadEnv(t)

	// Catch the signals this test sends before the signals loop listens,
	// so that none of them can end the test process.
	held := make(chan os.Signal, 16)
	signal.Notify(held, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(held)
	kill := func(s syscall.Signal) {
		if err := syscall.Kill(os.Getpid(), s); err != nil {
			t.Error(err)
		}
	}

	var inLoad, overlaps, loads atomic.Int32
	load := func() (*Config, error) {
		if inLoad.Add(1) > 1 {
			overlaps.Add(1)
		}
		defer inLoad.Add(-1)
		loads.Add(1)
		time.Sleep(time.Millisecond) // widen the window two reloads would share
		return e.mk(), nil
	}
	exited := make(chan int, 1)
	go func() { exited <- e.g.waitSignals(load) }()
	// The loop listens once a SIGHUP shows up in the log.
	testwait.For(t, "the signals loop to take SIGHUP", func() bool {
		kill(syscall.SIGHUP)
		time.Sleep(20 * time.Millisecond)
		return strings.Contains(e.log.String(), "SIGHUP: reloading")
	})

	// Phase 1: both reload paths at once, with every reader.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	loop := func(name string, f func() error) {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := f(); err != nil {
					t.Errorf("%s: %v", name, err)
					return
				}
			}
		})
	}
	get := func(path string, want int) func() error {
		return func() error {
			code, body, err := e.do("GET", path)
			if err == nil && code != want {
				t.Errorf("GET %s = %d %q", path, code, body)
			}
			return err
		}
	}
	loop("GET /metrics", get("/metrics", http.StatusOK))
	loop("GET /readyz", get("/readyz", http.StatusOK))
	loop("GET /guard/bans", get("/guard/bans", http.StatusOK))
	stopLogins := make(chan struct{})
	logins := make(chan struct{})
	go func() {
		defer close(logins)
		for {
			select {
			case <-stopLogins:
				return
			default:
			}
			if r, err := tryIMAPLogin(e.g.lns[0].Addr().String(), "alice@example.test", "alicepass"); err != nil || !strings.HasPrefix(r, "a OK") {
				t.Errorf("login during reloads = %q, %v", r, err)
				return
			}
		}
	}()
	for range 3 {
		wg.Go(func() {
			for range 8 {
				if code, body, err := e.do("POST", "/reload"); err != nil || code != http.StatusOK {
					t.Errorf("POST /reload = %d %q %v", code, body, err)
				}
			}
		})
	}
	for range 8 {
		kill(syscall.SIGHUP)
		time.Sleep(5 * time.Millisecond)
	}
	testwait.For(t, "SIGHUP reloads", func() bool { return strings.Count(e.log.String(), "SIGHUP: reloading") >= 3 })
	close(stopLogins) // SIGTERM closes the mail listeners
	<-logins

	// Phase 2: SIGTERM while POST /reload keeps swapping the state. The
	// pause lets pending SIGHUPs settle, so that the loop's read of the
	// state on SIGTERM is ordered after no reload of its own.
	time.Sleep(200 * time.Millisecond)
	posting := make(chan struct{})
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if code, body, err := e.do("POST", "/reload"); err != nil || code != http.StatusOK {
				t.Errorf("POST /reload = %d %q %v", code, body, err)
				return
			}
			select {
			case <-posting:
			default:
				close(posting)
			}
		}
	})
	<-posting
	kill(syscall.SIGTERM)
	select {
	case code := <-exited:
		if code != 0 {
			t.Errorf("signals loop exited %d after SIGTERM, want 0", code)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("signals loop did not stop after SIGTERM")
	}
	close(stop)
	wg.Wait()
	<-e.g.done

	if n := overlaps.Load(); n > 0 {
		t.Errorf("%d times two reloads read the config at once", n)
	}
	if n := loads.Load(); n < 3 {
		t.Errorf("only %d SIGHUP reloads ran", n)
	}
	if strings.Contains(e.log.String(), "reload failed") {
		t.Errorf("a reload failed:\n%s", e.log)
	}
}

// A reload stuck reading its files holds up no reader: /metrics, /readyz,
// the guard's admin API and logins answer from the running state while
// the reload is provably still in progress (its config read waits for
// the test), and the new state is used once it completes. The old
// gateway held the state's lock for the whole reload, so the scrape
// waited for it.
func TestScrapeDuringSlowReload(t *testing.T) {
	e := startReloadEnv(t)
	entered, release := make(chan struct{}), make(chan struct{})
	slow := func() (*Config, error) {
		close(entered)
		<-release
		c := e.mk()
		c.Policy.AllowCountries = []string{"DE"}
		return c, nil
	}
	e.hook.Store(&slow)
	before := e.g.current()
	type result struct {
		code int
		body string
		err  error
	}
	reloaded := make(chan result, 1)
	go func() {
		code, body, err := e.do("POST", "/reload")
		reloaded <- result{code, body, err}
	}()
	select {
	case <-entered:
	case r := <-reloaded:
		t.Fatalf("POST /reload = %d %q %v before reading the config", r.code, r.body, r.err)
	}
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()

	// The bound only ends a test that would otherwise hang: a reader
	// that waits for the reload waits until release.
	const hang = 20 * time.Second
	for _, path := range []string{"/metrics", "/readyz", "/guard/bans"} {
		done := make(chan result, 1)
		go func() {
			code, body, err := e.do("GET", path)
			done <- result{code, body, err}
		}()
		select {
		case r := <-done:
			if r.err != nil || r.code != http.StatusOK {
				t.Errorf("GET %s during the reload = %d %q %v", path, r.code, r.body, r.err)
			}
			if path == "/metrics" && !strings.Contains(r.body, "mailgate_config_last_reload_successful 1") {
				t.Errorf("scrape during the reload lacks the reload gauge:\n%s", r.body)
			}
		case <-time.After(hang):
			t.Errorf("GET %s did not answer while a reload was in progress", path)
		}
	}
	if r, err := tryIMAPLogin(e.g.lns[0].Addr().String(), "alice@example.test", "alicepass"); err != nil || !strings.HasPrefix(r, "a OK") {
		t.Errorf("login during the reload = %q, %v; want the running policy's OK", r, err)
	}
	select {
	case r := <-reloaded:
		t.Fatalf("POST /reload returned (%d %q %v) before its config read was released", r.code, r.body, r.err)
	default:
	}

	close(release)
	if r := <-reloaded; r.err != nil || r.code != http.StatusOK {
		t.Fatalf("POST /reload after release = %d %q %v", r.code, r.body, r.err)
	}
	if e.g.current() == before {
		t.Error("the state did not change after the reload")
	}
	if r, err := tryIMAPLogin(e.g.lns[0].Addr().String(), "alice@example.test", "alicepass"); err != nil || !strings.HasPrefix(r, "a NO") {
		t.Errorf("US login after the reload to DE only = %q, %v; want NO", r, err)
	}
}
