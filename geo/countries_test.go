package geo

import (
	"bytes"
	"fmt"
	"go/format"
	"maps"
	"os"
	"slices"
	"testing"
)

// binCountryNames reads code → name from every record of a BIN file.
func binCountryNames(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	db, err := openBIN(b, "x", path)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]string{}
	for _, r := range db.recs {
		if r.Country != "" {
			names[r.Country] = r.Name
		}
	}
	return names
}

// TestCountryNames checks the built-in name table against the names in the
// shared BIN (and regenerates countries.go with -update).
func TestCountryNames(t *testing.T) {
	names := binCountryNames(t, realBIN(t))
	if *update {
		var buf bytes.Buffer
		src, err := os.ReadFile("countries.go")
		if err != nil {
			t.Fatal(err)
		}
		i := bytes.Index(src, []byte("var countryNames = map[string]string{"))
		buf.Write(src[:i])
		buf.WriteString("var countryNames = map[string]string{\n")
		for _, k := range slices.Sorted(maps.Keys(names)) {
			fmt.Fprintf(&buf, "\t%q: %q,\n", k, names[k])
		}
		buf.WriteString("}\n")
		out, err := format.Source(buf.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile("countries.go", out, 0o644); err != nil {
			t.Fatal(err)
		}
		countryNames = names
	}
	if len(countryNames) < 240 {
		t.Errorf("countryNames has %d entries, want the ~250 ISO 3166-1 codes", len(countryNames))
	}
	for code, name := range names {
		if got := CountryName(code); got != name {
			t.Errorf("CountryName(%q) = %q, the BIN says %q", code, got, name)
		}
	}
	for _, tc := range []struct{ code, want string }{
		{"GB", "United Kingdom"}, {"DE", "Germany"}, {"US", "United States"}, {"XX", ""}, {"gb", ""},
	} {
		if got := CountryName(tc.code); got != tc.want {
			t.Errorf("CountryName(%q) = %q, want %q", tc.code, got, tc.want)
		}
	}
}
