package main

import (
	"strings"
	"testing"
	"time"
)

func TestParseConfigDefaults(t *testing.T) {
	cfg, err := parseConfig([]byte("tls: {self_signed: true}\n"))
	if err != nil {
		t.Fatalf("parseConfig: %v", err)
	}
	if len(cfg.Listeners) != 4 {
		t.Fatalf("default listeners = %d, want 4 (993, 995, 465, 587)", len(cfg.Listeners))
	}
	want := map[string]string{"imaps": ":993", "pop3s": ":995", "smtps": ":465", "submission": ":587"}
	for _, l := range cfg.Listeners {
		if want[l.Name] != l.Address {
			t.Errorf("listener %s on %q, want %q", l.Name, l.Address, want[l.Name])
		}
	}
	if cfg.Backends.IMAP.Address != "127.0.0.1:143" || cfg.Backends.SMTP.Verify != "imap" {
		t.Errorf("backend defaults: imap %q, smtp verify %q", cfg.Backends.IMAP.Address, cfg.Backends.SMTP.Verify)
	}
	if !cfg.Backends.IMAP.ForwardClient || !cfg.Backends.SMTP.XCLIENT {
		t.Errorf("client forwarding off by default: imap %v, smtp xclient %v", cfg.Backends.IMAP.ForwardClient, cfg.Backends.SMTP.XCLIENT)
	}
	if cfg.DrainTimeout != 30*time.Second {
		t.Errorf("drain_timeout default = %v", cfg.DrainTimeout)
	}
}

// Every problem is reported at once, each with its key path, so an admin
// fixes a config in one pass.
func TestParseConfigReportsEveryProblemWithPath(t *testing.T) {
	in := `
hostname: mx.example.com
drain_timeout: 30
log: {level: loud}
listeners:
  - {name: a, protocol: imap, address: ":993", tls: implicit, adress: x}
  - {name: a, protocol: nntp, address: "nohostport", tls: maybe, proxy_protocol_from: [10.0.0.0/33]}
backends:
  imap: {address: "127.0.0.1:143", tls: none, conect_timeout: 5s}
bogus: 1
tls: {self_signed: true}
`
	_, err := parseConfig([]byte(in))
	if err == nil {
		t.Fatal("parseConfig accepted a broken config")
	}
	msg := err.Error()
	for _, want := range []string{
		"drain_timeout: cannot use \"30\" as a duration",
		"listeners[0].adress: unknown key",
		"backends.imap.conect_timeout: unknown key",
		"bogus: unknown key",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error does not mention %q:\n%s", want, msg)
		}
	}
	// The decode errors stop before validation; fix them and the
	// semantic problems must all show, again with paths.
	in = strings.NewReplacer("drain_timeout: 30", "drain_timeout: 30s", ", adress: x", "",
		", conect_timeout: 5s", "", "bogus: 1\n", "").Replace(in)
	_, err = parseConfig([]byte(in))
	if err == nil {
		t.Fatal("parseConfig accepted invalid values")
	}
	msg = err.Error()
	for _, want := range []string{
		"log.level:",
		"listeners[1].name: \"a\" is used twice",
		"listeners[1].protocol:",
		"listeners[1].tls:",
		"listeners[1].address:",
		"listeners[1].proxy_protocol_from[0]:",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error does not mention %q:\n%s", want, msg)
		}
	}
}

// A section that names only the address keeps the other defaults; an
// explicit false is honoured.
func TestParseConfigBackendSectionKeepsDefaults(t *testing.T) {
	cfg, err := parseConfig([]byte("tls: {self_signed: true}\nbackends:\n  imap: {address: '10.0.0.5:143'}\n  pop3: {forward_client: false}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if b := cfg.Backends.IMAP; b.Address != "10.0.0.5:143" || !b.ForwardClient {
		t.Errorf("imap = %+v, want the given address and forward_client on", b.Options)
	}
	if b := cfg.Backends.POP3; b.Address != "127.0.0.1:110" || b.ForwardClient {
		t.Errorf("pop3 = %+v, want the default address and forward_client off", b.Options)
	}
}

func TestParseConfigLineNumbers(t *testing.T) {
	_, err := parseConfig([]byte("log:\n  level: info\n  colour: red\n"))
	if err == nil || !strings.Contains(err.Error(), "log.colour: unknown key (line 3)") {
		t.Fatalf("err = %v, want log.colour with line 3", err)
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte("listeners: [{name: a, protocol: imap, address: ':993'}]\n"))
	f.Add([]byte("geo: {overrides: {'127.0.0.2/32': RU}}\nlimits: {auth_failure_delay: 1s}\n"))
	f.Add([]byte("a: &x [*x]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := parseConfig(data)
		if err == nil && cfg == nil {
			t.Fatal("nil config without error")
		}
	})
}
