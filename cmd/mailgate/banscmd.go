package main

// `mailgate bans list|add|remove`, `mailgate lockouts` and `mailgate
// unlock USER`: operator commands that talk to a running mailgate's guard
// over the admin listener (docs/bruteforce.md, "Operator control").

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mailgate/mailgate/cmd/mailgate/internal/admin"
	"github.com/mailgate/mailgate/guard"
)

// adminCallTimeout bounds one admin request; the guard answers from
// memory, so anything slower is a hung or wrong address.
const adminCallTimeout = 10 * time.Second

const bansUsage = `Usage:
  mailgate bans list [flags]                          list active bans
  mailgate bans add [flags] PREFIX DURATION [REASON]  ban an address or network
  mailgate bans remove [flags] PREFIX                 lift a ban
  mailgate lockouts [flags]                           list locked logins
  mailgate unlock [flags] USER                        unlock a login
  mailgate unlock [flags] -console ACCOUNT            unlock a web console account

Flags:
  -config FILE       read admin.address and admin.token_file from FILE
  -admin URL         admin listener (http://127.0.0.1:9100 or unix:/path)
  -token-file FILE   file holding the admin token
`

// adminClient is where and how to reach the running guard.
type adminClient struct {
	base, token string
}

// adminFlags parses the shared flags and resolves the admin address and
// token, from the flags first and the config file for what they lack.
func adminFlags(name string, args []string, stderr io.Writer, extra ...func(*flag.FlagSet)) (*adminClient, []string, error) {
	fs, path := commandFlags(name, stderr)
	for _, e := range extra {
		e(fs)
	}
	fs.Usage = func() { fmt.Fprint(stderr, bansUsage) }
	admin := fs.String("admin", "", "admin listener URL")
	tokenFile := fs.String("token-file", "", "admin token file")
	if err := fs.Parse(args); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			err = fmt.Errorf("%w: %w", errUsage, err)
		}
		return nil, nil, err
	}
	base, tf := *admin, *tokenFile
	if base == "" || tf == "" {
		cfg, err := loadConfig(*path)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w (or give -admin and -token-file)", *path, err)
		}
		if base == "" {
			if base, err = adminURL(cfg.Admin.Address); err != nil {
				return nil, nil, err
			}
		}
		if tf == "" {
			tf = cfg.Admin.TokenFile
		}
	}
	if tf == "" {
		return nil, nil, errors.New("no admin token: set admin.token_file in the config or give -token-file")
	}
	b, err := os.ReadFile(tf)
	if err != nil {
		return nil, nil, fmt.Errorf("admin token: %w", err)
	}
	return &adminClient{base: base, token: strings.TrimSpace(string(b))}, fs.Args(), nil
}

// adminURL turns admin.address into a URL this host can reach: a
// wildcard listen address is reached on loopback.
func adminURL(addr string) (string, error) {
	if addr == "off" {
		return "", errors.New("admin.address is off: the running mailgate has no admin listener")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("admin.address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port), nil
}

// call sends one request to the guard's admin API and decodes the reply
// into out (when not nil).
func (a *adminClient) call(method, path string, body, out any) error {
	ctx, cancel := context.WithTimeout(context.Background(), adminCallTimeout)
	defer cancel()
	data, err := admin.Request(ctx, a.base, a.token, method, admin.GuardPrefix+path, body)
	if err != nil {
		return err
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("admin reply: %w", err)
		}
	}
	return nil
}

func runBans(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, bansUsage)
		return 2
	}
	sub := args[0]
	a, rest, err := adminFlags("bans "+sub, args[1:], stderr)
	if err != nil {
		return cmdErr(stderr, err)
	}
	switch sub {
	case "list":
		if len(rest) != 0 {
			break
		}
		var bans []guard.Ban
		if err := a.call("GET", "/bans", nil, &bans); err != nil {
			return cmdErr(stderr, err)
		}
		printBans(stdout, bans)
		return 0
	case "add":
		if len(rest) < 2 {
			break
		}
		req := map[string]string{"prefix": rest[0], "duration": rest[1], "reason": strings.Join(rest[2:], " ")}
		var b guard.Ban
		if err := a.call("POST", "/bans", req, &b); err != nil {
			return cmdErr(stderr, err)
		}
		fmt.Fprintf(stdout, "banned %s until %s\n", b.Prefix, b.Until.Format(time.RFC3339))
		return 0
	case "remove":
		if len(rest) != 1 {
			break
		}
		if err := a.call("DELETE", "/bans?prefix="+url.QueryEscape(rest[0]), nil, nil); err != nil {
			return cmdErr(stderr, err)
		}
		fmt.Fprintf(stdout, "ban of %s lifted\n", rest[0])
		return 0
	}
	fmt.Fprint(stderr, bansUsage)
	return 2
}

func runLockouts(args []string, stdout, stderr io.Writer) int {
	a, rest, err := adminFlags("lockouts", args, stderr)
	if err != nil {
		return cmdErr(stderr, err)
	}
	if len(rest) != 0 {
		fmt.Fprint(stderr, bansUsage)
		return 2
	}
	var ls []guard.Lockout
	if err := a.call("GET", "/lockouts", nil, &ls); err != nil {
		return cmdErr(stderr, err)
	}
	if len(ls) == 0 {
		fmt.Fprintln(stdout, "no locked logins")
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "LOGIN\tUNTIL\tREASON")
	for _, l := range ls {
		until := "until unlocked (compromised)"
		if !l.Until.IsZero() {
			until = l.Until.Format(time.RFC3339)
		}
		// A mail login is quoted: no mail login, whatever its bytes,
		// prints as a console account (a name of letters, digits and
		// ._@- only) or spills into the next column.
		login := strconv.Quote(l.Login)
		if l.Console != "" {
			login = "console account " + l.Console // mailgate unlock -console
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", login, until, l.Reason)
	}
	tw.Flush()
	return 0
}

func runUnlock(args []string, stdout, stderr io.Writer) int {
	var account string
	a, rest, err := adminFlags("unlock", args, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&account, "console", "", "unlock this web console account (not a mail login)")
	})
	if err != nil {
		return cmdErr(stderr, err)
	}
	if account != "" {
		if len(rest) != 0 {
			fmt.Fprint(stderr, bansUsage)
			return 2
		}
		if err := a.call("POST", "/unlock?console="+url.QueryEscape(account), nil, nil); err != nil {
			return cmdErr(stderr, err)
		}
		fmt.Fprintf(stdout, "console account %s unlocked\n", account)
		return 0
	}
	if len(rest) != 1 {
		fmt.Fprint(stderr, bansUsage)
		return 2
	}
	if err := a.call("POST", "/unlock?user="+url.QueryEscape(rest[0]), nil, nil); err != nil {
		return cmdErr(stderr, err)
	}
	fmt.Fprintf(stdout, "%q unlocked\n", rest[0])
	return 0
}

func printBans(w io.Writer, bans []guard.Ban) {
	if len(bans) == 0 {
		fmt.Fprintln(w, "no active bans")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PREFIX\tUNTIL\tKIND\tREASON")
	for _, b := range bans {
		kind := fmt.Sprintf("auto #%d", b.Offence)
		if b.Manual {
			kind = "admin"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", b.Prefix, b.Until.Format(time.RFC3339), kind, b.Reason)
	}
	tw.Flush()
}

// errUsage marks a command line that could not be parsed (exit 2).
var errUsage = errors.New("usage")

// cmdErr reports err and returns the exit status: 0 for -h, 2 for a bad
// command line (flag already printed why), 1 for everything else.
func cmdErr(stderr io.Writer, err error) int {
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	}
	fmt.Fprintf(stderr, "mailgate: %v\n", err)
	return 1
}
