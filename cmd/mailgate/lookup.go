package main

// mailgate lookup: show where addresses are placed, with the same geo
// configuration (databases, overrides) the proxy uses.

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"

	"github.com/mailgate/mailgate/geo"
)

// maxLookupArg bounds one address argument or input line. The longest
// useful input, "[ffff:…:ffff%zone]:65535", is far below it; longer input
// is an error, not a reason to buffer without limit.
const maxLookupArg = 256

// errLookupSyntax is wrapped by every parseLookupArg error.
var errLookupSyntax = errors.New("not an IP address")

// parseLookupArg parses one address as users paste it: "192.0.2.1",
// "2001:db8::1", "fe80::1%eth0", "[2001:db8::1]", and with a port as in log
// lines ("192.0.2.1:993", "[2001:db8::1]:993"). It is pure and fuzzed.
func parseLookupArg(s string) (netip.Addr, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return netip.Addr{}, fmt.Errorf("%w: empty", errLookupSyntax)
	case len(s) > maxLookupArg:
		return netip.Addr{}, fmt.Errorf("%w: longer than %d bytes", errLookupSyntax, maxLookupArg)
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return a, nil
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr(), nil
	}
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		if a, err := netip.ParseAddr(s[1 : len(s)-1]); err == nil && a.Is6() {
			return a, nil
		}
	}
	return netip.Addr{}, errLookupSyntax
}

// quoteInput shows bad input safely in an error line: quoted (so control
// characters cannot forge output) and shortened.
func quoteInput(s string) string {
	const max = 64
	if len(s) > max {
		return fmt.Sprintf("%q…", s[:max])
	}
	return fmt.Sprintf("%q", s)
}

// multiFlag collects a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// runLookup implements `mailgate lookup [-config FILE] [-db FILE]...
// [-override CIDR=CC]... [IP...]`. Without IP arguments (or with "-") it
// reads addresses from stdin, one or more per line. Exit status: 0, 1 when
// any input was not an address (the others are still answered), 2 on a
// usage or database error.
func runLookup(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("lookup", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: mailgate lookup [-config FILE] [-db FILE]... [-override CIDR=CODE]... [IP...]\n\n"+
			"Prints where each address is placed: country code and name, region/city when\n"+
			"known, and what answered (override, reserved range, or database and its build\n"+
			"date). Without IP arguments, reads addresses from standard input.\n\n")
		fs.PrintDefaults()
	}
	configPath := fs.String("config", "", "read the geo: section of this config file")
	var dbs, overrides multiFlag
	fs.Var(&dbs, "db", "database `FILE` (repeatable, tried in order; \"embedded\" for the built-in one); replaces the config's list")
	fs.Var(&overrides, "override", "`CIDR=CODE` override (repeatable), added to the config's")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}

	var cfg geo.Config
	if *configPath != "" {
		c, err := loadConfig(*configPath)
		if err != nil {
			fmt.Fprintf(stderr, "mailgate lookup: %v\n", err)
			return 2
		}
		cfg = c.Geo
	}
	if len(dbs) > 0 {
		cfg.Databases = dbs
	}
	if len(overrides) > 0 {
		merged := make(map[string]string, len(cfg.Overrides)+len(overrides))
		for k, v := range cfg.Overrides {
			merged[k] = v
		}
		for _, o := range overrides {
			k, v, ok := strings.Cut(o, "=")
			if !ok {
				fmt.Fprintf(stderr, "mailgate lookup: -override %s: want CIDR=CODE\n", quoteInput(o))
				return 2
			}
			merged[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
		cfg.Overrides = merged
	}
	db, err := geo.Open(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		fmt.Fprintf(stderr, "mailgate lookup: %v\n", err)
		return 2
	}
	p := lookupPrinter{db: db, out: bufio.NewWriter(stdout), stderr: stderr, infos: map[string]geo.DBInfo{}}
	defer p.out.Flush()
	for _, in := range db.Info() {
		p.infos[in.Name] = in
		if !in.IPv6 {
			p.v4only = append(p.v4only, in.File)
		}
	}

	status := 0
	inputs := fs.Args()
	if len(inputs) == 0 || (len(inputs) == 1 && inputs[0] == "-") {
		if err := eachLine(stdin, func(line []byte, tooLong bool) {
			if tooLong {
				p.bad(string(line), fmt.Errorf("%w: line longer than %d bytes", errLookupSyntax, maxLookupArg))
				status = 1
				return
			}
			s := string(bytes.TrimSpace(line))
			if s == "" || s[0] == '#' {
				return
			}
			for _, f := range strings.Fields(s) {
				if !p.one(f) {
					status = 1
				}
			}
		}); err != nil {
			p.out.Flush()
			fmt.Fprintf(stderr, "mailgate lookup: reading standard input: %v\n", err)
			return 2
		}
		return status
	}
	for _, s := range inputs {
		if !p.one(s) {
			status = 1
		}
	}
	return status
}

// lookupPrinter formats answers.
type lookupPrinter struct {
	db     *geo.DB
	out    *bufio.Writer
	stderr io.Writer
	infos  map[string]geo.DBInfo // by DBInfo.Name (= Location.Source)
	v4only []string              // files without IPv6 data
}

// one looks up and prints one input; false when it is not an address.
func (p *lookupPrinter) one(s string) bool {
	a, err := parseLookupArg(s)
	if err != nil {
		p.bad(s, err)
		return false
	}
	loc := p.db.Lookup(a)
	var b strings.Builder
	fmt.Fprintf(&b, "%s  %s  %s", a, loc.Code(), loc.Name)
	if where := joinNonEmpty(", ", loc.Region, loc.City); where != "" {
		b.WriteString("  " + where)
	}
	switch {
	case loc.Source == "override":
		b.WriteString("  (override)")
	case loc.Source == "reserved":
		b.WriteString("  (reserved range)")
	case loc.Source == "":
		b.WriteString("  (no database places it")
		if a.Unmap().Is6() && len(p.v4only) > 0 {
			b.WriteString("; IPv4-only: " + strings.Join(p.v4only, ", "))
		}
		b.WriteString(")")
	default:
		in := p.infos[loc.Source]
		fmt.Fprintf(&b, "  (%s, built %s)", loc.Source, dateOf(in))
	}
	b.WriteByte('\n')
	p.out.WriteString(b.String())
	return true
}

// bad reports an input that is not an address, on stderr in input order.
func (p *lookupPrinter) bad(s string, err error) {
	p.out.Flush()
	fmt.Fprintf(p.stderr, "mailgate lookup: %s: %v\n", quoteInput(s), err)
}

func dateOf(in geo.DBInfo) string {
	if in.Built.IsZero() {
		return "unknown date"
	}
	return in.Built.UTC().Format("2006-01-02")
}

func joinNonEmpty(sep string, parts ...string) string {
	var keep []string
	for _, s := range parts {
		if s != "" {
			keep = append(keep, s)
		}
	}
	return strings.Join(keep, sep)
}

// eachLine calls fn for every line of r. A line longer than maxLookupArg
// is passed (cut) with tooLong set and the rest of it skipped, so input
// without newlines cannot grow memory.
func eachLine(r io.Reader, fn func(line []byte, tooLong bool)) error {
	br := bufio.NewReaderSize(r, maxLookupArg+2)
	for {
		line, err := br.ReadSlice('\n')
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			fn(line[:maxLookupArg], true)
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = br.ReadSlice('\n')
			}
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
			continue
		case err == io.EOF:
			if len(line) > 0 {
				fn(line, false)
			}
			return nil
		case err != nil:
			return err
		}
		fn(line, false)
	}
}
