package geo

import (
	"flag"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "regenerate generated files (countries.go) from shared/geodata")

// geodataDir finds shared/geodata: $MAILGATE_GEODATA, or a directory
// shared/geodata next to the repository (or any parent of it). It skips
// the test when absent, unless CI=true, where it fails.
func geodataDir(t testing.TB) string {
	t.Helper()
	if d := os.Getenv("MAILGATE_GEODATA"); d != "" {
		return d
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		cand := filepath.Join(dir, "shared", "geodata")
		if fi, err := os.Stat(filepath.Join(cand, "IPCOUNTRY-NRO-DB1.BIN")); err == nil && fi.Mode().IsRegular() {
			return cand
		}
		if filepath.Dir(dir) == dir {
			break
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("shared/geodata not found: set MAILGATE_GEODATA to the directory holding IPCOUNTRY-NRO-DB1.BIN and geo-whois-asn-country.mmdb")
	}
	t.Skip("shared/geodata not found (set MAILGATE_GEODATA); skipping tests on the real databases")
	return ""
}

// realBIN and realMMDB return the paths of the shared test databases.
func realBIN(t testing.TB) string {
	return filepath.Join(geodataDir(t), "IPCOUNTRY-NRO-DB1.BIN")
}

func realMMDB(t testing.TB) string {
	return filepath.Join(geodataDir(t), "geo-whois-asn-country.mmdb")
}

// testLogger routes logs to t.Log.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}
