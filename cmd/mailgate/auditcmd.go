package main

// `mailgate audit`: the login history (docs/audit.md), read from the
// audit database while mailgate writes it. And the serve side: opening
// the store and handing it to the proxy.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mailgate/mailgate/audit"
	"github.com/mailgate/mailgate/proxy"
	"github.com/prometheus/client_golang/prometheus"
)

// openAudit opens the audit database the config names; nil without one.
// The store belongs to the process: its settings take effect at start.
func openAudit(cfg *Config, reg prometheus.Registerer, log *slog.Logger) (*audit.Store, error) {
	if cfg.Audit.Path == "" {
		return nil, nil
	}
	return audit.Open(cfg.Audit, audit.Options{
		DefaultDomain: cfg.Policy.DefaultDomain,
		Node:          cfg.Hostname,
		Logger:        log.With("component", "audit"),
		Registerer:    reg,
	})
}

// auditor is the proxy's view of the store: a nil interface, not a nil
// pointer, when there is none.
func auditor(s *audit.Store) proxy.Auditor {
	if s == nil {
		return nil
	}
	return s
}

const auditUsage = `Usage:
  mailgate audit [flags] USER                                  the account's logins, newest first
  mailgate audit [flags] --top accounts|sources|countries     what is refused most, and from where

Flags:
`

func runAudit(args []string, stdout, stderr io.Writer) int {
	fs, cfgPath := commandFlags("audit", stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, auditUsage)
		fs.PrintDefaults()
	}
	db := fs.String("db", "", "audit database file (default: audit.path of the config)")
	since := fs.String("since", "", "how far back: a duration like 24h, 7d or 2w (default 7d for USER, 24h for --top)")
	failed := fs.Bool("failed", false, "only refused attempts")
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	top := fs.String("top", "", "accounts, sources or countries")
	limit := fs.Int("limit", 0, "at most this many rows (default 1000 for USER, 20 for --top)")
	// USER may come before or after the flags.
	var user string
	for {
		if err := fs.Parse(args); err != nil {
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		if user != "" {
			fmt.Fprintf(stderr, "mailgate audit: one USER only (got %q and %q)\n", user, fs.Arg(0))
			return 2
		}
		user, args = fs.Arg(0), fs.Args()[1:]
	}
	if (user == "") == (*top == "") {
		fmt.Fprintln(stderr, "mailgate audit: give a USER or --top, not both or neither")
		fs.Usage()
		return 2
	}
	if *since == "" {
		*since = "7d"
		if *top != "" {
			*since = "24h"
		}
	}
	from, err := audit.ParseSince(*since, time.Now())
	if err != nil {
		fmt.Fprintln(stderr, "mailgate audit:", err)
		return 2
	}
	path, domain := *db, ""
	if path == "" {
		cfg, err := loadConfig(*cfgPath)
		if err != nil {
			printErrors(stderr, "mailgate audit: "+*cfgPath, err)
			return 2
		}
		if cfg.Audit.Path == "" {
			fmt.Fprintf(stderr, "mailgate audit: %s has no audit.path; the audit is off (docs/audit.md)\n", *cfgPath)
			return 1
		}
		path, domain = cfg.Audit.Path, cfg.Policy.DefaultDomain
	}
	st, err := audit.OpenReader(path)
	if err != nil {
		fmt.Fprintln(stderr, "mailgate", err)
		return 1
	}
	defer st.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if *top != "" {
		rows, err := st.Top(ctx, *top, from, *limit)
		if err != nil {
			fmt.Fprintln(stderr, "mailgate", err)
			return 1
		}
		return printTop(stdout, stderr, *top, from, rows, *asJSON)
	}
	account := audit.Normalize(user, domain)
	rows, err := st.History(ctx, audit.Query{Account: account, Since: from, Failed: *failed, Limit: *limit})
	if err != nil {
		fmt.Fprintln(stderr, "mailgate audit:", err)
		return 1
	}
	return printHistory(stdout, stderr, account, from, rows, *asJSON)
}

func writeJSON(stdout, stderr io.Writer, v any) int {
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		fmt.Fprintln(stderr, "mailgate audit:", err)
		return 1
	}
	return 0
}

const auditTime = "2006-01-02 15:04:05"

// dash shows an empty field as "-" and a space as "_", so every column
// of a line is one word.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return strings.ReplaceAll(s, " ", "_")
}

func printHistory(stdout, stderr io.Writer, account string, since time.Time, rows []audit.Row, asJSON bool) int {
	if asJSON {
		if rows == nil {
			rows = []audit.Row{}
		}
		return writeJSON(stdout, stderr, rows)
	}
	if len(rows) == 0 {
		fmt.Fprintf(stdout, "no logins of %s since %s UTC\n", account, since.UTC().Format(auditTime))
		return 0
	}
	fmt.Fprintf(stdout, "%s since %s UTC, newest first (times UTC)\n", account, since.UTC().Format(auditTime))
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	// CAUSE is last: it is the one column with spaces.
	fmt.Fprintln(tw, "LAST SEEN\tFIRST SEEN\tCOUNT\tRESULT\tADDRESS\tCOUNTRY\tPROTO\tLISTENER\tMECH\tCLIENT\tTLS\tSNI\tNODE\tCAUSE")
	for _, r := range rows {
		cause := r.Cause
		if cause == "" {
			cause = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			r.LastSeen.Format(auditTime), r.FirstSeen.Format(auditTime), r.Count, r.Result,
			dash(r.Addr), dash(r.Country), dash(r.Protocol), dash(r.Listener), dash(r.Mech), dash(r.ClientID),
			dash(r.TLS), dash(r.SNI), dash(r.Node), cause)
	}
	if err := tw.Flush(); err != nil {
		fmt.Fprintln(stderr, "mailgate audit:", err)
		return 1
	}
	return 0
}

func printTop(stdout, stderr io.Writer, by string, since time.Time, rows []audit.TopRow, asJSON bool) int {
	if asJSON {
		if rows == nil {
			rows = []audit.TopRow{}
		}
		return writeJSON(stdout, stderr, rows)
	}
	if len(rows) == 0 {
		fmt.Fprintf(stdout, "no refused logins since %s UTC\n", since.UTC().Format(auditTime))
		return 0
	}
	fmt.Fprintf(stdout, "refused logins since %s UTC, by %s\n", since.UTC().Format(auditTime), strings.TrimSuffix(by, "s"))
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	cols := map[string][3]string{
		"accounts":  {"ACCOUNT", "SOURCES", "COUNTRIES"},
		"sources":   {"SOURCE", "ACCOUNTS", "COUNTRIES"},
		"countries": {"COUNTRY", "ACCOUNTS", "SOURCES"},
	}[by]
	fmt.Fprintf(tw, "%s\tFAILURES\t%s\t%s\n", cols[0], cols[1], cols[2])
	for _, r := range rows {
		a, b := r.Sources, r.Countries
		switch by {
		case "sources":
			a, b = r.Accounts, r.Countries
		case "countries":
			a, b = r.Accounts, r.Sources
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", dash(r.Key), r.Failures, strconv.FormatInt(a, 10), strconv.FormatInt(b, 10))
	}
	if err := tw.Flush(); err != nil {
		fmt.Fprintln(stderr, "mailgate audit:", err)
		return 1
	}
	return 0
}
