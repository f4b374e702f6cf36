package main

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRunGeoUpdateCommand(t *testing.T) {
	gz, err := os.ReadFile(filepath.Join("..", "..", "geo", "data", "geo-whois-asn-country.mmdb.gz"))
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	db, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(db) })) // 127.0.0.1
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "country.mmdb")
	cfgPath := filepath.Join(dir, "mailgate.yaml")
	cfg := "tls: {self_signed: true}\ngeo: {databases: [" + dbPath + "]}\ngeo_update: {url: \"" + srv.URL + "/raw\"}\n"
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := runGeo([]string{"update", "-config", cfgPath}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "updated:") {
		t.Errorf("stdout %q", stdout.String())
	}
	if _, err := os.Stat(dbPath); err != nil {
		t.Errorf("database not installed: %v", err)
	}
	if code := runGeo([]string{"bogus"}, &stdout, &stderr); code != 2 {
		t.Errorf("unknown geo subcommand exit %d, want 2", code)
	}
}
