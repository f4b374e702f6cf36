package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os/signal"
	"strconv"
	"syscall"
	"text/template"
	"time"

	"github.com/mailgate/mailgate/backend"
	"github.com/mailgate/mailgate/cmd/mailgate/internal/demo"
	"github.com/mailgate/mailgate/geo"
	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/tlsconf"
)

// demoDeniedAddr is a second loopback address the demo places in a
// country its policy does not allow, so a denial can be tried locally.
const demoDeniedAddr = "127.0.0.2"

// demoConfig is the whole configuration of `mailgate demo`: in-memory
// backends, a self-signed certificate, the embedded geo database, and a
// policy that allows US and IN, with 127.0.0.1 in the US and 127.0.0.2 in
// Russia.
func demoConfig(host string, port int, b *demo.Backends) *Config {
	addr := func(off int) string { return net.JoinHostPort(host, strconv.Itoa(port+off)) }
	cfg := &Config{
		Hostname: "mailgate.demo",
		Log:      LogConfig{Level: "info", Format: "text"},
		Listeners: []ListenerConfig{
			{Name: "imaps", Protocol: "imap", Address: addr(993), TLS: backend.TLSImplicit},
			{Name: "imap", Protocol: "imap", Address: addr(143), TLS: backend.TLSStartTLS},
			{Name: "smtps", Protocol: "smtp", Address: addr(465), TLS: backend.TLSImplicit},
			{Name: "submission", Protocol: "smtp", Address: addr(587), TLS: backend.TLSStartTLS},
		},
		Backends: BackendsConfig{
			IMAP: &BackendConfig{Options: backend.Options{Address: b.IMAPAddr}},
			SMTP: &SMTPBackendConfig{
				BackendConfig: BackendConfig{Options: backend.Options{Address: b.SMTPAddr}},
				Verify:        "imap",
			},
		},
		TLS: tlsconf.Config{SelfSigned: true},
		Geo: geo.Config{Overrides: map[string]string{
			"127.0.0.1/32":         "US",
			demoDeniedAddr + "/32": "RU",
		}},
		Policy: policy.Config{AllowCountries: []string{"US", "IN"}},
	}
	cfg.Limits.AuthFailureDelay = time.Second
	cfg.applyDefaults()
	return cfg
}

var demoHelp = template.Must(template.New("").Parse(`
mailgate demo is running. Users: {{range $u, $p := .Users}}{{$u}} (password {{$p}})  {{end}}
Policy: countries US and IN are allowed; 127.0.0.1 counts as US, {{.Denied}} as RU.

Allowed login (lists the INBOX over IMAPS):
  curl -k --url 'imaps://{{.IMAPS}}/INBOX' --user '{{.User}}:{{.Pass}}'

Denied login (same user and password, from {{.Denied}}, "Russia"):
  curl -k --interface {{.Denied}} --url 'imaps://{{.IMAPSDenied}}/INBOX' --user '{{.User}}:{{.Pass}}'

By hand (type: a LOGIN {{.User}} {{.Pass}}, then b SELECT INBOX, then c LOGOUT):
  openssl s_client -quiet -crlf -connect {{.IMAPS}}

Send a message through submission, then read it back:
  printf 'Subject: hello\r\n\r\nhi from the demo\r\n' > /tmp/mailgate-demo.eml
  curl -k --ssl-reqd --url 'smtp://{{.Submission}}' --user '{{.User}}:{{.Pass}}' \
    --mail-from '{{.User}}' --mail-rcpt '{{.User}}' --upload-file /tmp/mailgate-demo.eml
  curl -k --url 'imaps://{{.IMAPS}}/INBOX;UID=2' --user '{{.User}}:{{.Pass}}'

The log below shows AUTHPASS, AUTHFAILED and COUNTRYFAILED lines. Ctrl-C stops.

`))

func runDemo(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	host := fs.String("host", "127.0.0.1", "address to listen on (loopback)")
	base := fs.Int("port-base", 10000, "listeners use base+993 (IMAPS), +143 (IMAP), +465 (SMTPS), +587 (submission)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))

	b, err := demo.Start(ctx, log.With("component", "demo-backend"))
	if err != nil {
		fmt.Fprintf(stderr, "mailgate demo: %v\n", err)
		return 1
	}
	defer b.Close()
	cfg := demoConfig(*host, *base, b)
	if err := cfg.Validate(); err != nil {
		printErrors(stderr, "mailgate demo", err)
		return 1
	}
	g, err := startGateway(cfg, log)
	if err != nil {
		printErrors(stderr, "mailgate demo", err)
		return 1
	}
	user, pass := "alice@example.test", b.Users["alice@example.test"]
	hp := func(h string, off int) string { return net.JoinHostPort(h, strconv.Itoa(*base+off)) }
	_ = demoHelp.Execute(stdout, map[string]any{
		"Users": b.Users, "User": user, "Pass": pass, "Denied": demoDeniedAddr,
		"IMAPS": hp(*host, 993), "IMAPSDenied": hp(*host, 993), "Submission": hp(*host, 587),
	})
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = g.shutdown(sctx)
	return 0
}
