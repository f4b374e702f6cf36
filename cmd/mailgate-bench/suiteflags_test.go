package main

import (
	"bufio"
	"flag"
	"os"
	"slices"
	"strings"
	"testing"
)

// TestSuiteFlagsDocumented keeps docs/BENCHMARKS.md's "Suite flags" table
// and the suite's command line the same: every flag listed once, with
// the default the code has.
func TestSuiteFlagsDocumented(t *testing.T) {
	f, err := os.Open("../../docs/BENCHMARKS.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	doc := map[string]string{} // flag → default column
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "Suite flags:" {
			in = true
			continue
		}
		if !in {
			continue
		}
		if !strings.HasPrefix(line, "|") {
			if len(doc) > 0 {
				break
			}
			continue
		}
		cols := strings.Split(line, "|")
		if len(cols) < 4 || !strings.HasPrefix(strings.TrimSpace(cols[1]), "`-") {
			continue // header and rule
		}
		name := strings.Trim(strings.TrimSpace(cols[1]), "`-")
		if _, dup := doc[name]; dup {
			t.Errorf("-%s listed twice", name)
		}
		doc[name] = strings.TrimSpace(cols[2])
	}
	if len(doc) == 0 {
		t.Fatal(`no "Suite flags:" table in docs/BENCHMARKS.md`)
	}
	var o suiteOpts
	fs, _ := suiteFlags(&o)
	fs.VisitAll(func(fl *flag.Flag) {
		def, ok := doc[fl.Name]
		if !ok {
			t.Errorf("-%s is not in docs/BENCHMARKS.md's suite flags", fl.Name)
			return
		}
		delete(doc, fl.Name)
		switch {
		case def == "":
			if fl.DefValue != "" {
				t.Errorf("-%s: docs give no default, the code has %q", fl.Name, fl.DefValue)
			}
		case strings.HasPrefix(def, "`"):
			if d := strings.Trim(def, "`"); d != fl.DefValue {
				t.Errorf("-%s: docs give default %q, the code has %q", fl.Name, d, fl.DefValue)
			}
		}
		// Any other default column is prose (-out's "new dir under /tmp").
	})
	for name := range doc {
		t.Errorf("docs/BENCHMARKS.md lists -%s, which the suite does not have", name)
	}
}

// TestParseEnv: -mailgate-env and -base-env take NAME=value words and
// refuse anything else, so a typo does not start a target with a
// setting nobody asked for.
func TestParseEnv(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		bad  bool
	}{
		{in: "", want: nil},
		{in: "  ", want: nil},
		{in: "GOMAXPROCS=1", want: []string{"GOMAXPROCS=1"}},
		{in: "GOGC=200  GOMEMLIMIT=1GiB", want: []string{"GOGC=200", "GOMEMLIMIT=1GiB"}},
		{in: "GODEBUG=", want: []string{"GODEBUG="}},
		{in: "GOMAXPROCS", bad: true},
		{in: "=1", bad: true},
		{in: "GOGC=200 oops", bad: true},
	} {
		got, err := parseEnv(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("parseEnv(%q) = %q, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("parseEnv(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}
