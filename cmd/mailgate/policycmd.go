package main

// mailgate policy test|check, mailgate allow, mailgate revoke: the admin's
// and help desk's view of the policy. The logic lives in package policy;
// this file parses flags, loads the config and prints.

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/mailgate/mailgate/geo"
	"github.com/mailgate/mailgate/policy"
)

// Exit statuses of these commands. policy test also uses exitDeny so that
// scripts can test a policy without parsing output.
const (
	exitOK    = 0
	exitDeny  = 1 // policy test: denied; policy check -strict: findings
	exitError = 2 // usage, config or file errors
)

// parseInterleaved parses flags that may come before, between or after the
// positional arguments ("allow alice FR -until 2026-12-10"), which the
// flag package alone does not allow.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// loadPolicyConfig reads the config for a policy command.
func loadPolicyConfig(path string, stderr io.Writer) (*Config, bool) {
	cfg, err := loadConfig(path)
	if err != nil {
		printErrors(stderr, "mailgate: "+path, err)
		return nil, false
	}
	return cfg, true
}

func runPolicy(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, "Usage: mailgate policy test|check [flags]\n")
		return exitError
	}
	switch args[0] {
	case "test":
		return runPolicyTest(args[1:], stdout, stderr)
	case "check":
		return runPolicyCheck(args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "mailgate policy: unknown subcommand %s (want test or check)\n", quoteInput(args[0]))
	return exitError
}

// runPolicyTest: mailgate policy test -user U -ip IP [-proto P] [-at TIME].
func runPolicyTest(args []string, stdout, stderr io.Writer) int {
	fs, path := commandFlags("policy test", stderr)
	user := fs.String("user", "", "login name, as the client sends it (required)")
	ipArg := fs.String("ip", "", "client address (required)")
	proto := fs.String("proto", "imap", "protocol: imap, pop3 or smtp")
	at := fs.String("at", "", "decide as of this date or time (default now), to try expiring rules")
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: mailgate policy test -user LOGIN -ip ADDRESS [-proto imap|pop3|smtp] [-at TIME] [-config FILE]\n\n"+
			"Decides one login with the configured databases and policy files and prints\n"+
			"allow or deny, where the address was placed and the rule that decided.\n"+
			"Exit status: 0 allow, 1 deny, 2 error.\n\n")
		fs.PrintDefaults()
	}
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return exitError
	}
	if len(pos) > 0 || *user == "" || *ipArg == "" {
		fs.Usage()
		return exitError
	}
	addr, err := parseLookupArg(*ipArg)
	if err != nil {
		fmt.Fprintf(stderr, "mailgate policy test: -ip %s: %v\n", quoteInput(*ipArg), err)
		return exitError
	}
	p := policy.Protocol(strings.ToLower(*proto))
	if p != policy.IMAP && p != policy.POP3 && p != policy.SMTP {
		fmt.Fprintf(stderr, "mailgate policy test: -proto %s: want imap, pop3 or smtp\n", quoteInput(*proto))
		return exitError
	}
	var opts []policy.Option
	if *at != "" {
		// A date alone means its start here: "is it still allowed on the 10th?"
		when, err := time.ParseInLocation("2006-01-02", *at, time.Local)
		if err != nil {
			if when, err = policy.ParseUntil(*at); err != nil {
				fmt.Fprintf(stderr, "mailgate policy test: -at: %v\n", err)
				return exitError
			}
		}
		opts = append(opts, policy.WithClock(func() time.Time { return when }))
	}
	cfg, ok := loadPolicyConfig(*path, stderr)
	if !ok {
		return exitError
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	db, err := geo.Open(cfg.Geo, log)
	if err != nil {
		printErrors(stderr, "mailgate policy test", err)
		return exitError
	}
	eng, err := policy.New(cfg.Policy, db, log, opts...)
	if err != nil {
		printErrors(stderr, "mailgate policy test", err)
		return exitError
	}
	d := eng.Decide(policy.Request{Login: *user, Protocol: p, Addr: addr})
	printDecision(stdout, *user, p, addr, d)
	if !d.Allow {
		return exitDeny
	}
	return exitOK
}

func printDecision(w io.Writer, user string, p policy.Protocol, addr netip.Addr, d policy.Decision) {
	verdict := "deny"
	if d.Allow {
		verdict = "allow"
	}
	l := d.Location
	where := l.Code()
	if where == "" {
		where = "unknown"
	}
	if l.Name != "" {
		where += " (" + l.Name + ")"
	}
	if l.Source != "" {
		where += ", source " + l.Source
	}
	fmt.Fprintf(w, "%s\n", verdict)
	fmt.Fprintf(w, "  user:     %s (%s)\n", quoteIfOdd(user), p)
	fmt.Fprintf(w, "  address:  %s\n", addr)
	fmt.Fprintf(w, "  location: %s\n", where)
	fmt.Fprintf(w, "  rule:     %s\n", d.Rule)
	fmt.Fprintf(w, "  reason:   %s\n", d.Reason)
}

// quoteIfOdd prints a login as is unless it has characters that could
// forge output lines.
func quoteIfOdd(s string) string {
	for _, r := range s {
		if r < ' ' || r == 0x7f {
			return quoteInput(s)
		}
	}
	return s
}

// noGeo places nothing; policy check reads files and needs no database.
type noGeo struct{}

func (noGeo) Lookup(netip.Addr) geo.Location { return geo.Location{Label: "unknown"} }

// runPolicyCheck: mailgate policy check [-config FILE] [-strict].
func runPolicyCheck(args []string, stdout, stderr io.Writer) int {
	fs, path := commandFlags("policy check", stderr)
	strict := fs.Bool("strict", false, "exit 1 when there are findings, not only on errors")
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: mailgate policy check [-config FILE] [-strict]\n\n"+
			"Validates the policy config and files, listing every error with file:line,\n"+
			"then expired rules, rules that can never match and rules hidden by others.\n"+
			"Exit status: 0 valid, 1 findings with -strict, 2 errors.\n\n")
		fs.PrintDefaults()
	}
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return exitError
	}
	if len(pos) > 0 {
		fs.Usage()
		return exitError
	}
	cfg, ok := loadPolicyConfig(*path, stderr)
	if !ok {
		return exitError
	}
	eng, err := policy.New(cfg.Policy, noGeo{}, slog.New(slog.DiscardHandler))
	if err != nil {
		printErrors(stderr, "error", err)
		return exitError
	}
	fs2 := eng.Check()
	for _, f := range fs2 {
		fmt.Fprintln(stdout, f)
	}
	fmt.Fprintf(stdout, "policy is valid; %d finding(s)\n", len(fs2))
	if *strict && len(fs2) > 0 {
		return exitDeny
	}
	return exitOK
}

// protoFlag collects -proto values, repeated or comma-separated.
type protoFlag []policy.Protocol

func (p *protoFlag) String() string { return fmt.Sprint(*p) }
func (p *protoFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		pp := policy.Protocol(strings.ToLower(strings.TrimSpace(s)))
		if pp != policy.IMAP && pp != policy.POP3 && pp != policy.SMTP {
			return fmt.Errorf("%s: want imap, pop3 or smtp", quoteInput(s))
		}
		*p = append(*p, pp)
	}
	return nil
}

// runAllow: mailgate allow USER CC|IP|CIDR [-until DATE] [-proto P] [-note TEXT].
func runAllow(args []string, stdout, stderr io.Writer) int {
	fs, path := commandFlags("allow", stderr)
	until := fs.String("until", "", "expiry: 2026-12-10 (through that day), 2026-12-10T18:00, or RFC 3339")
	note := fs.String("note", "", "text stored with the rule (ticket, who asked); rules file only")
	var protos protoFlag
	fs.Var(&protos, "proto", "only for these protocols (imap, pop3, smtp; repeat or comma-separate)")
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: mailgate allow USER CC|IP|CIDR [-until DATE] [-proto P] [-note TEXT] [-config FILE]\n\n"+
			"Lets USER (a login, @domain or *) log in from a country, address or network.\n"+
			"A plain country or address goes to policy.user_file; with -until, -proto,\n"+
			"-note or a CIDR it goes to policy.rules_file. A running mailgate picks the\n"+
			"change up within policy.watch_interval.\n\n")
		fs.PrintDefaults()
	}
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return exitError
	}
	if len(pos) != 2 {
		fs.Usage()
		return exitError
	}
	now := time.Now()
	ch := policy.Change{User: pos[0], Target: pos[1], Protocols: protos, Note: *note}
	if *until != "" {
		if ch.Until, err = policy.ParseUntil(*until); err != nil {
			fmt.Fprintf(stderr, "mailgate allow: -until: %v\n", err)
			return exitError
		}
	}
	cfg, ok := loadPolicyConfig(*path, stderr)
	if !ok {
		return exitError
	}
	res, err := policy.Allow(cfg.Policy, ch, now)
	if err != nil {
		printErrors(stderr, "mailgate allow", err)
		return exitError
	}
	printEdit(stdout, res)
	return exitOK
}

// runRevoke: mailgate revoke USER CC|IP|CIDR, or mailgate revoke -all USER.
func runRevoke(args []string, stdout, stderr io.Writer) int {
	fs, path := commandFlags("revoke", stderr)
	all := fs.Bool("all", false, "remove every allow of USER")
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: mailgate revoke USER CC|IP|CIDR [-config FILE]\n"+
			"       mailgate revoke -all USER [-config FILE]\n\n"+
			"Removes USER's allow lines from policy.user_file and allow rules for USER\n"+
			"alone from policy.rules_file. Rules shared with other users and deny rules\n"+
			"are left alone (shared ones are named so you can edit them).\n\n")
		fs.PrintDefaults()
	}
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return exitError
	}
	if (*all && len(pos) != 1) || (!*all && len(pos) != 2) {
		fs.Usage()
		return exitError
	}
	ch := policy.Change{User: pos[0], All: *all}
	if !*all {
		ch.Target = pos[1]
	}
	cfg, ok := loadPolicyConfig(*path, stderr)
	if !ok {
		return exitError
	}
	results, err := policy.Revoke(cfg.Policy, ch)
	for _, r := range results {
		printEdit(stdout, r)
	}
	if err != nil {
		printErrors(stderr, "mailgate revoke", err)
		return exitError
	}
	return exitOK
}

func printEdit(w io.Writer, r policy.EditResult) {
	for _, d := range r.Detail {
		fmt.Fprintln(w, d)
	}
	for _, d := range r.Warnings {
		fmt.Fprintln(w, "warning: "+d)
	}
	if r.Changed {
		fmt.Fprintf(w, "%s written; a running mailgate reloads it by itself\n", r.File)
	}
}
