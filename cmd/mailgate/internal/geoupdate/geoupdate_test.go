package geoupdate

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// testMMDB is the repository's embedded default database, a real MMDB.
func testMMDB(t *testing.T) []byte {
	t.Helper()
	gz, err := os.ReadFile(filepath.Join("..", "..", "..", "..", "geo", "data", "geo-whois-asn-country.mmdb.gz"))
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func zipOf(t *testing.T, name string, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, _ := zw.Create("README_LITE.TXT")
	w.Write([]byte("licence text"))
	// Stored, not deflated: compressing 8 MB under -race takes seconds.
	w, _ = zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Store})
	w.Write(data)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func tarGzOf(t *testing.T, name string, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	gw, _ := gzip.NewWriterLevel(&buf, gzip.NoCompression)
	tw := tar.NewWriter(gw)
	tw.WriteHeader(&tar.Header{Name: "GeoLite2-Country_20261124/", Typeflag: tar.TypeDir, Mode: 0o755})
	tw.WriteHeader(&tar.Header{Name: "GeoLite2-Country_20261124/COPYRIGHT.txt", Typeflag: tar.TypeReg, Mode: 0o644, Size: 3})
	tw.Write([]byte("(c)"))
	tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data))})
	tw.Write(data)
	tw.Close()
	gw.Close()
	return buf.Bytes()
}

// geoServer imitates the vendors' download endpoints on loopback.
func geoServer(t *testing.T, db []byte) *httptest.Server {
	t.Helper()
	zipped := zipOf(t, "IP2LOCATION-LITE-DB1.IPV6.BIN.mmdb", db)
	tgz := tarGzOf(t, "GeoLite2-Country_20261124/GeoLite2-Country.mmdb", db)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /raw", func(w http.ResponseWriter, r *http.Request) { w.Write(db) })
	mux.HandleFunc("GET /garbage", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("<html>maintenance</html>")) })
	mux.HandleFunc("GET /download/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("token") != "t0ken" || r.URL.Query().Get("file") != "DB1LITEBINIPV6" {
			http.Error(w, "NO PERMISSION", http.StatusForbidden)
			return
		}
		w.Write(zipped)
	})
	mux.HandleFunc("GET /geoip/databases/GeoLite2-Country/download", func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		if !ok || u != "12345" || p != "lic-key" || r.URL.Query().Get("suffix") != "tar.gz" {
			http.Error(w, "invalid credentials", http.StatusUnauthorized)
			return
		}
		w.Write(tgz)
	})
	srv := httptest.NewServer(mux) // listens on 127.0.0.1
	t.Cleanup(srv.Close)
	return srv
}

func geoUpdateConfig(u Config) Config {
	u.ApplyDefaults()
	return u
}

func TestGeoUpdateProviders(t *testing.T) {
	db := testMMDB(t)
	srv := geoServer(t, db)
	for _, tc := range []struct {
		name string
		u    Config
	}{
		{"url", Config{URL: srv.URL + "/raw"}},
		{"ip2location zip", Config{Provider: "ip2location", URL: srv.URL + "/download/", Token: "t0ken"}},
		{"maxmind tar.gz", Config{Provider: "maxmind", URL: srv.URL + "/geoip/databases/GeoLite2-Country/download?suffix=tar.gz",
			AccountID: "12345", LicenseKey: "lic-key"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			u := geoUpdateConfig(tc.u)
			u.File = filepath.Join(dir, "country.mmdb")
			info, err := Update(context.Background(), u, srv.Client(), "mailgate/test")
			if err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(u.File)
			if err != nil || !bytes.Equal(got, db) {
				t.Fatalf("installed file differs from the served database (%v)", err)
			}
			if info.Built.IsZero() || info.Name != "country.mmdb" {
				t.Errorf("info = %+v", info)
			}
			// No temporary file is left next to the database.
			if ents, _ := os.ReadDir(dir); len(ents) != 1 {
				t.Errorf("directory holds %d entries, want 1", len(ents))
			}
			// A second run over the existing file (same build) works.
			if _, err := Update(context.Background(), u, srv.Client(), "mailgate/test"); err != nil {
				t.Errorf("update over an equal database: %v", err)
			}
		})
	}
}

// A bad download never replaces the working database.
func TestGeoUpdateFailuresKeepTheOldFile(t *testing.T) {
	db := testMMDB(t)
	srv := geoServer(t, db)
	for _, tc := range []struct {
		name, want string
		u          Config
	}{
		{"not a database", "not a usable database", Config{URL: srv.URL + "/garbage"}},
		{"wrong token", "403", Config{Provider: "ip2location", URL: srv.URL + "/download/", Token: "secret-wrong"}},
		{"wrong licence", "401", Config{Provider: "maxmind", URL: srv.URL + "/geoip/databases/GeoLite2-Country/download?suffix=tar.gz",
			AccountID: "12345", LicenseKey: "secret-wrong"}},
		{"too large", "max_size", Config{URL: srv.URL + "/raw", MaxSize: 1000}},
		{"unreachable", "GET", Config{URL: "http://127.0.0.1:1/x?token=secret-wrong"}},
		{"no token", "token is needed", Config{Provider: "ip2location"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			u := geoUpdateConfig(tc.u)
			u.File = filepath.Join(dir, "country.mmdb")
			old := []byte("old database stands in here")
			os.WriteFile(u.File, old, 0o644)
			_, err := Update(context.Background(), u, srv.Client(), "mailgate/test")
			if !errors.Is(err, ErrDownload) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrDownload mentioning %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "secret-wrong") {
				t.Errorf("error shows the credential: %v", err)
			}
			if got, _ := os.ReadFile(u.File); !bytes.Equal(got, old) {
				t.Error("failed update changed the database file")
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 1 {
				t.Errorf("directory holds %d entries after failure, want 1", len(ents))
			}
		})
	}
}

func TestUnpackBombIsBounded(t *testing.T) {
	big := bytes.Repeat([]byte{0}, 1<<20)
	var buf bytes.Buffer
	gw := gzip.NewWriter(&buf)
	gw.Write(big)
	gw.Close()
	f, err := os.CreateTemp(t.TempDir(), "dl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Write(buf.Bytes())
	var out bytes.Buffer
	err = unpack(f, &out, 64<<10)
	if !errors.Is(err, ErrDownload) || out.Len() > 64<<10+1 {
		t.Errorf("unpack of a 1 MiB gzip with a 64 KiB bound: err %v, wrote %d", err, out.Len())
	}
}

// FuzzUnpack feeds arbitrary downloads to the archive unpacker: it must
// return the database, or an ErrDownload, within its size bound.
func FuzzUnpack(f *testing.F) {
	small := []byte("\xab\xcd\xefMaxMind.com fake metadata")
	f.Add(small)
	f.Add([]byte("PK\x03\x04 truncated zip"))
	f.Add([]byte{0x1f, 0x8b, 0x08, 0x00})
	dir := f.TempDir()
	const max = 1 << 16
	f.Fuzz(func(t *testing.T, data []byte) {
		fh, err := os.CreateTemp(dir, "dl")
		if err != nil {
			t.Fatal(err)
		}
		defer os.Remove(fh.Name())
		defer fh.Close()
		fh.Write(data)
		var out bytes.Buffer
		err = unpack(fh, &out, max)
		if err != nil && !errors.Is(err, ErrDownload) {
			t.Errorf("error %v does not wrap ErrDownload", err)
		}
		if out.Len() > max+1 {
			t.Errorf("wrote %d octets, bound %d", out.Len(), max)
		}
	})
}
