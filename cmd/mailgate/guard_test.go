package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/cmd/mailgate/internal/demo"
	"github.com/mailgate/mailgate/guard"
)

func TestGuardConfigKeepsDefaultsAndZeroSwitchesOff(t *testing.T) {
	cfg, err := parseConfig([]byte("tls: {self_signed: true}\nguard:\n  ban: {ip_after: 0}\n  trusted_networks: [192.0.2.0/24]\n  ipv6_prefixes: [56]\n"))
	if err != nil {
		t.Fatal(err)
	}
	d := guard.Defaults()
	g := cfg.Guard
	if g.Ban.IPAfter != 0 {
		t.Errorf("ban.ip_after = %d, want 0 (written in the file: off)", g.Ban.IPAfter)
	}
	if g.Ban.NetworkAfter != d.Ban.NetworkAfter || g.Tarpit != d.Tarpit || g.Backend != d.Backend {
		t.Errorf("unset keys lost their defaults: %+v", g)
	}
	if len(g.TrustedNetworks) != 1 || len(g.IPv6Prefixes) != 1 || g.IPv6Prefixes[0] != 56 {
		t.Errorf("lists not taken from the file: %v %v", g.TrustedNetworks, g.IPv6Prefixes)
	}
	// No guard section at all: every default.
	cfg, err = parseConfig([]byte("tls: {self_signed: true}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Guard.Ban.IPAfter != d.Ban.IPAfter || cfg.Guard.Window != d.Window {
		t.Errorf("no guard section: %+v, want the defaults", cfg.Guard)
	}
}

func TestGuardConfigErrorsNameTheKey(t *testing.T) {
	for in, want := range map[string]string{
		"guard:\n  ban: {factor: 0.5}\n  window: 0s\n": "guard.ban.factor: must be between 1 and 100, got 0.5",
		"guard:\n  tarpitt: {}\n":                      "guard.tarpitt: unknown key",
		"guard:\n  trusted_networks: [nonsense]\n":     "guard.trusted_networks[0]",
	} {
		_, err := parseConfig([]byte("tls: {self_signed: true}\n" + in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want %q", in, err, want)
		}
	}
}

// guardEnv is a gateway in front of the demo backends with a strict
// guard, its admin listener on an httptest server, and a token file.
type guardEnv struct {
	g         *gateway
	imap      string
	admin     *httptest.Server
	tokenFile string
	stateFile string
	config    func() *Config // a fresh copy of the config it started with
}

func startGuardEnv(t *testing.T) *guardEnv {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	b, err := demo.Start(ctx, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	pop3, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pop3.Close() })
	dir := t.TempDir()
	e := &guardEnv{tokenFile: filepath.Join(dir, "token"), stateFile: filepath.Join(dir, "guard.json")}
	const token = "0123456789abcdef-token"
	if err := os.WriteFile(e.tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.config = func() *Config {
		cfg := opsConfig(b, pop3.Addr().String())
		cfg.Guard.Tarpit.After = 0
		cfg.Guard.Ban.IPAfter = 2
		cfg.Guard.StateFile = e.stateFile
		return cfg
	}
	e.g, err = startGateway(e.config(), log)
	if err != nil {
		t.Fatal(err)
	}
	e.imap = e.g.lns[0].Addr().String()
	e.admin = httptest.NewServer(newAdminServer(e.g, token, nil).Handler())
	t.Cleanup(e.admin.Close)
	t.Cleanup(func() { e.shutdown(t) })
	return e
}

func (e *guardEnv) shutdown(t *testing.T) {
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	_ = e.g.shutdown(sctx)
}

// greeted reports whether a connection from local address from gets the
// IMAP greeting (false: closed at once by the guard).
func greeted(t *testing.T, addr, from string) bool {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	l, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(l, "* OK")
}

// cli runs mailgate with args against e's admin listener.
func (e *guardEnv) cli(t *testing.T, args ...string) (int, string) {
	t.Helper()
	full := append([]string{args[0]}, "-admin", e.admin.URL, "-token-file", e.tokenFile)
	if args[0] == "bans" {
		full = append([]string{"bans", args[1], "-admin", e.admin.URL, "-token-file", e.tokenFile}, args[2:]...)
	} else {
		full = append(full, args[1:]...)
	}
	var out, errOut bytes.Buffer
	code := run(full, strings.NewReader(""), &out, &errOut)
	return code, out.String() + errOut.String()
}

func TestGatewayGuardBansAtAcceptAndAdminCommands(t *testing.T) {
	e := startGuardEnv(t)
	// 127.0.0.1 is US (allowed); two wrong passwords ban it.
	for _, pw := range []string{"wrong1", "wrong2"} {
		if r := imapLogin(t, e.imap, "127.0.0.1", "alice@example.test", pw); !strings.HasPrefix(r, "a NO") {
			t.Fatalf("wrong password: %q", r)
		}
	}
	if greeted(t, e.imap, "127.0.0.1") {
		t.Fatal("banned source was greeted")
	}
	// The ban is of that one address.
	if !greeted(t, e.imap, "127.0.0.4") {
		t.Fatal("another source refused")
	}
	code, out := e.cli(t, "bans", "list")
	if code != 0 || !strings.Contains(out, "127.0.0.1/32") || !strings.Contains(out, "auto #1") {
		t.Fatalf("bans list: %d %q", code, out)
	}
	if code, out = e.cli(t, "bans", "remove", "127.0.0.1"); code != 0 {
		t.Fatalf("bans remove: %d %q", code, out)
	}
	if r := imapLogin(t, e.imap, "127.0.0.1", "alice@example.test", "alicepass"); !strings.HasPrefix(r, "a OK") {
		t.Fatalf("login after the ban was lifted: %q", r)
	}
	if code, out = e.cli(t, "bans", "add", "127.0.0.5", "1h", "test", "ban"); code != 0 || !strings.Contains(out, "banned 127.0.0.5/32 until") {
		t.Fatalf("bans add: %d %q", code, out)
	}
	if greeted(t, e.imap, "127.0.0.5") {
		t.Fatal("admin-banned source was greeted")
	}
	if code, out = e.cli(t, "bans", "remove", "127.0.0.9"); code != 1 || !strings.Contains(out, "no ban of 127.0.0.9/32") {
		t.Errorf("removing a ban that does not exist: %d %q", code, out)
	}
	if code, out = e.cli(t, "unlock", "nobody@example.test"); code != 1 || !strings.Contains(out, "not locked") {
		t.Errorf("unlock of an unlocked login: %d %q", code, out)
	}
	if code, out = e.cli(t, "lockouts"); code != 0 || !strings.Contains(out, "no locked logins") {
		t.Errorf("lockouts: %d %q", code, out)
	}
	// Shutdown saves the state; the admin ban is in it.
	e.shutdown(t)
	data, err := os.ReadFile(e.stateFile)
	if err != nil {
		t.Fatalf("state file not written at shutdown: %v", err)
	}
	if !strings.Contains(string(data), "127.0.0.5/32") {
		t.Errorf("state file lacks the admin ban: %s", data)
	}
	// A restart loads it: the ban still refuses at accept.
	g2, err := startGateway(e.config(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = g2.shutdown(sctx)
	}()
	imap2 := g2.lns[0].Addr().String()
	if greeted(t, imap2, "127.0.0.5") {
		t.Error("ban from the state file not applied after a restart")
	}
	if !greeted(t, imap2, "127.0.0.1") {
		t.Error("lifted ban came back after a restart")
	}
}

func TestBansCommandNeedsToken(t *testing.T) {
	e := startGuardEnv(t)
	wrong := filepath.Join(t.TempDir(), "wrong")
	os.WriteFile(wrong, []byte("not-the-token-at-all"), 0o600)
	var out, errOut bytes.Buffer
	code := run([]string{"bans", "list", "-admin", e.admin.URL, "-token-file", wrong}, nil, &out, &errOut)
	if code != 1 || !strings.Contains(errOut.String(), "401") {
		t.Errorf("wrong token: %d %q", code, errOut.String())
	}
	code = run([]string{"bans", "list", "-config", filepath.Join(t.TempDir(), "missing.yaml")}, nil, &out, &errOut)
	if code != 1 || !strings.Contains(errOut.String(), "-token-file") {
		t.Errorf("no config, no flags: %d %q", code, errOut.String())
	}
	if code = run([]string{"unlock", "-nope", "x"}, nil, &out, &errOut); code != 2 {
		t.Errorf("unknown flag: exit %d, want 2", code)
	}
	code = run([]string{"bans", "frobnicate", "-admin", e.admin.URL, "-token-file", e.tokenFile}, nil, &out, &errOut)
	if code != 2 {
		t.Errorf("unknown subcommand: exit %d, want 2", code)
	}
}

func TestAdminURL(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:9100": "http://127.0.0.1:9100",
		":9100":          "http://127.0.0.1:9100",
		"0.0.0.0:9100":   "http://127.0.0.1:9100",
		"[::1]:9100":     "http://[::1]:9100",
	} {
		if got, err := adminURL(in); err != nil || got != want {
			t.Errorf("adminURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := adminURL("off"); err == nil {
		t.Error("adminURL(off) gave no error")
	}
}

func TestGuardSurvivesReloadAndUsesTheNewGeo(t *testing.T) {
	e := startGuardEnv(t)
	for _, pw := range []string{"wrong1", "wrong2"} {
		imapLogin(t, e.imap, "127.0.0.1", "alice@example.test", pw)
	}
	if greeted(t, e.imap, "127.0.0.1") {
		t.Fatal("not banned before the reload")
	}
	if !greeted(t, e.imap, "127.0.0.6") {
		t.Fatal("127.0.0.6 refused before the reload")
	}
	before := e.g.guard.g
	// The new config places 127.0.0.6 in CN and denies CN at accept.
	err := e.g.reload(func() (*Config, error) {
		cfg := e.config()
		cfg.Geo.Overrides["127.0.0.6/32"] = "CN"
		cfg.Guard.DenyCountries = []string{"CN"}
		return cfg, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if e.g.guard.g != before {
		t.Fatal("reload replaced the guard")
	}
	if greeted(t, e.imap, "127.0.0.1") {
		t.Error("reload lifted the ban")
	}
	if greeted(t, e.imap, "127.0.0.6") {
		t.Error("deny_countries with the reloaded geo overrides did not refuse 127.0.0.6")
	}
	if !greeted(t, e.imap, "127.0.0.7") {
		t.Error("an address the new config does not deny was refused")
	}
}

func TestGuardCorruptStateFileDoesNotStopStartup(t *testing.T) {
	e := startGuardEnv(t)
	e.shutdown(t)
	if err := os.WriteFile(e.stateFile, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := &syncBuf{}
	g, err := startGateway(e.config(), slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatalf("a corrupt guard state file stopped start-up: %v", err)
	}
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	_ = g.shutdown(sctx)
	if !strings.Contains(logs.String(), "guard state not loaded") {
		t.Errorf("corrupt state file not reported; log:\n%s", logs.String())
	}
}
