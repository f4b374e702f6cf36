package main

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runLookupT(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = runLookup(args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

func TestParseLookupArg(t *testing.T) {
	tests := []struct{ in, want string }{
		{"81.2.69.142", "81.2.69.142"},
		{"  81.2.69.142\r\n", "81.2.69.142"},
		{"2001:db8::1", "2001:db8::1"},
		{"fe80::1%eth0", "fe80::1%eth0"},
		{"[2001:db8::1]", "2001:db8::1"},
		{"[2001:db8::1]:993", "2001:db8::1"},
		{"192.0.2.1:143", "192.0.2.1"},
		{"::ffff:8.8.8.8", "::ffff:8.8.8.8"},
		{"", ""}, {"example.org", ""}, {"1.2.3", ""}, {"1.2.3.4/24", ""}, {"[1.2.3.4]", ""},
		{"1.2.3.4:99999", ""}, {"01.2.3.4", ""}, {strings.Repeat("1", 300), ""},
	}
	for _, tc := range tests {
		a, err := parseLookupArg(tc.in)
		if tc.want == "" {
			if err == nil {
				t.Errorf("parseLookupArg(%q) = %v, want an error", tc.in, a)
			}
			continue
		}
		if err != nil || a.String() != tc.want {
			t.Errorf("parseLookupArg(%q) = %v, %v, want %s", tc.in, a, err, tc.want)
		}
	}
}

// TestRunLookupArgs: one line per address, bad input reported by name on
// stderr without stopping the others, exit status 1.
func TestRunLookupArgs(t *testing.T) {
	code, out, errs := runLookupT(t, "", "81.2.69.142", "127.0.0.1", "bogus\x1b[31m", "2001:db8::1", "[::ffff:8.8.8.8]:993", "192.0.2.1")
	if code != 1 {
		t.Errorf("exit status %d, want 1", code)
	}
	want := []string{
		"81.2.69.142  GB  United Kingdom  (embedded, built 2026-06-17)",
		"127.0.0.1  loopback  loopback address  (reserved range)",
		"2001:db8::1  documentation  documentation or benchmarking range  (reserved range)",
		"::ffff:8.8.8.8  US  United States  (embedded, built 2026-06-17)",
		"192.0.2.1  documentation  documentation or benchmarking range  (reserved range)",
	}
	if got := strings.Split(strings.TrimSuffix(out, "\n"), "\n"); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("stdout:\n%s\nwant:\n%s", out, strings.Join(want, "\n"))
	}
	if !strings.Contains(errs, `"bogus\x1b[31m"`) || strings.Contains(errs, "\x1b") {
		t.Errorf("stderr %q: want the bad input named, quoted", errs)
	}
}

// TestRunLookupStdin reads addresses from standard input: several per line,
// comments, blank lines, an overlong line that is reported and skipped.
func TestRunLookupStdin(t *testing.T) {
	in := "# clients\n8.8.8.8 10.0.0.1\n\n" + strings.Repeat("x", 5000) + "\n2001:4860:4860::8888\nnope"
	code, out, errs := runLookupT(t, in)
	if code != 1 {
		t.Errorf("exit status %d, want 1", code)
	}
	for _, w := range []string{"8.8.8.8  US  ", "10.0.0.1  private  ", "2001:4860:4860::8888  US  "} {
		if !strings.Contains(out, w) {
			t.Errorf("stdout lacks %q:\n%s", w, out)
		}
	}
	if !strings.Contains(errs, "longer than 256 bytes") || !strings.Contains(errs, `"nope"`) {
		t.Errorf("stderr:\n%s", errs)
	}
	if code, out, _ := runLookupT(t, "8.8.8.8\n", "-"); code != 0 || !strings.HasPrefix(out, "8.8.8.8  US") {
		t.Errorf("with -: %d %q", code, out)
	}
}

// TestRunLookupFlags: -override makes a loopback address foreign; -db
// names the database that answers; a bad database is exit status 2 with
// the file named.
func TestRunLookupFlags(t *testing.T) {
	code, out, errs := runLookupT(t, "", "-override", "127.0.0.2=RU", "-override", "127.0.0.0/24=lab", "-db", "embedded", "127.0.0.2", "127.0.0.3")
	if code != 0 || !strings.Contains(out, "127.0.0.2  RU  ") || !strings.Contains(out, "(override)") ||
		!strings.Contains(out, "127.0.0.3  lab  ") {
		t.Errorf("overrides: %d\n%s%s", code, out, errs)
	}
	if code, _, errs := runLookupT(t, "", "-override", "127.0.0.2=UK", "1.1.1.1"); code != 2 || !strings.Contains(errs, "GB") {
		t.Errorf("bad override: %d %q", code, errs)
	}
	if code, _, errs := runLookupT(t, "", "-override", "nonsense", "1.1.1.1"); code != 2 || !strings.Contains(errs, "CIDR=CODE") {
		t.Errorf("bad override syntax: %d %q", code, errs)
	}
	missing := filepath.Join(t.TempDir(), "GeoLite2-Country.mmdb")
	if code, _, errs := runLookupT(t, "", "-db", missing, "1.1.1.1"); code != 2 || !strings.Contains(errs, missing) {
		t.Errorf("missing db: %d %q", code, errs)
	}
	if code, _, _ := runLookupT(t, "", "-h"); code != 0 {
		t.Errorf("-h: exit %d", code)
	}
}

// TestRunLookupRealBIN: the shared BIN answers with its name and date.
func TestRunLookupRealBIN(t *testing.T) {
	bin := filepath.Join(sharedGeodata(t), "IPCOUNTRY-NRO-DB1.BIN")
	code, out, errs := runLookupT(t, "", "-db", bin, "81.2.69.142", "2001:4860:4860::8888")
	if code != 0 || !strings.Contains(out, "81.2.69.142  GB  United Kingdom  (IPCOUNTRY-NRO-DB1.BIN, built 2026-06-17)") ||
		!strings.Contains(out, "2001:4860:4860::8888  US  United States  (IPCOUNTRY-NRO-DB1.BIN, built 2026-06-17)") {
		t.Errorf("%d\n%s%s", code, out, errs)
	}
}

// sharedGeodata finds shared/geodata ($MAILGATE_GEODATA or a sibling of
// the repository); skips when absent unless CI=true.
func sharedGeodata(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("MAILGATE_GEODATA"); d != "" {
		return d
	}
	wd, _ := os.Getwd()
	for dir := wd; filepath.Dir(dir) != dir; dir = filepath.Dir(dir) {
		cand := filepath.Join(dir, "shared", "geodata")
		if _, err := os.Stat(filepath.Join(cand, "IPCOUNTRY-NRO-DB1.BIN")); err == nil {
			return cand
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("shared/geodata not found; set MAILGATE_GEODATA")
	}
	t.Skip("shared/geodata not found (set MAILGATE_GEODATA)")
	return ""
}

// FuzzParseLookupArg: never panics; whatever parses round-trips through
// its string form; overlong input is always refused.
func FuzzParseLookupArg(f *testing.F) {
	for _, s := range []string{"81.2.69.142", "[2001:db8::1]:993", "fe80::1%eth0", "192.0.2.1:143", "", "[", "::ffff:1.2.3.4", "1.2.3.4%x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := parseLookupArg(s)
		if err != nil {
			return
		}
		if len(s) > maxLookupArg && len(strings.TrimSpace(s)) > maxLookupArg {
			t.Fatalf("accepted %d bytes", len(s))
		}
		b, err := netip.ParseAddr(a.String())
		if err != nil || b != a {
			t.Fatalf("parseLookupArg(%q) = %v, which does not round-trip (%v)", s, a, err)
		}
	})
}

// TestRunLookupConfig reads the geo: section of a config file; -override
// adds to its overrides.
func TestRunLookupConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mailgate.yaml")
	cfg := `
hostname: mx.example.com
backends:
  imap: {address: "127.0.0.1:143", tls: none}
tls: {self_signed: true}
geo:
  databases: [embedded]
  overrides:
    127.0.0.2: RU
`
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errs := runLookupT(t, "", "-config", path, "-override", "127.0.0.3=office", "127.0.0.2", "127.0.0.3")
	if code != 0 || !strings.Contains(out, "127.0.0.2  RU  ") || !strings.Contains(out, "127.0.0.3  office  ") {
		t.Errorf("%d\n%s%s", code, out, errs)
	}
	if code, _, errs := runLookupT(t, "", "-config", path+".missing", "1.1.1.1"); code != 2 || !strings.Contains(errs, path+".missing") {
		t.Errorf("missing config: %d %q", code, errs)
	}
}
