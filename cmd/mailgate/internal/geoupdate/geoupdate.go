// Package geoupdate is `mailgate geo update`: download a fresh geo
// database, verify it with the same reader serve uses, and rename it over
// the configured file. A
// running mailgate picks the new file up through geo.watch_interval or
// SIGHUP; the rename is atomic, so it never sees half a file.
//
// Downloads may be the bare database or an archive: IP2Location ships ZIP
// files with the .BIN inside, MaxMind tar.gz files with the .mmdb inside.
// Both the download and the unpacked file are bounded by
// geo_update.max_size (a ZIP or gzip bomb must not fill the disk).
package geoupdate

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mailgate/mailgate/geo"
)

// Vendor download endpoints; geo_update.url overrides them (tests point
// it at a loopback server).
const (
	ip2locationURL = "https://www.ip2location.com/download/"
	maxmindURL     = "https://download.maxmind.com/geoip/databases/"
)

// Config is the config file's `geo_update:` section, used by `mailgate
// geo update` and by the database-age warning.
type Config struct {
	// Provider is "ip2location", "maxmind" or "url" (URL taken as is).
	// Empty: "url" when URL is set.
	Provider string `yaml:"provider"`
	// URL overrides the provider's download address. For "ip2location"
	// and "maxmind" the default is the vendor's download endpoint.
	URL string `yaml:"url"`
	// Token is the IP2Location download token.
	Token string `yaml:"token"`
	// AccountID and LicenseKey are MaxMind's credentials (HTTP basic).
	AccountID  string `yaml:"account_id"`
	LicenseKey string `yaml:"license_key"`
	// Edition is the database code: "DB1LITEBINIPV6" (IP2Location) or
	// "GeoLite2-Country" (MaxMind).
	Edition string `yaml:"edition"`
	// File is the database file to replace; default the first entry of
	// geo.databases that is not "embedded".
	File string `yaml:"file"`
	// MaxAge: a loaded database built longer ago than this is reported
	// stale (log warning, mailgate_geo_database_stale). Default 720h.
	MaxAge time.Duration `yaml:"max_age"`
	// Timeout bounds the whole download. Default 10m.
	Timeout time.Duration `yaml:"timeout"`
	// MaxSize bounds the download in octets. Default 1 GiB: the largest
	// IP2Location BIN files are a few hundred MB.
	MaxSize int64 `yaml:"max_size"`
}

// Defaults for Config.
const (
	defaultMaxAge  = 720 * time.Hour
	defaultTimeout = 10 * time.Minute
	defaultMaxSize = 1 << 30
)

// ApplyDefaults fills in what the config file leaves out.
func (u *Config) ApplyDefaults() {
	if u.Provider == "" && u.URL != "" {
		u.Provider = "url"
	}
	if u.MaxAge == 0 {
		u.MaxAge = defaultMaxAge
	}
	if u.Timeout == 0 {
		u.Timeout = defaultTimeout
	}
	if u.MaxSize == 0 {
		u.MaxSize = defaultMaxSize
	}
	if u.Edition == "" {
		switch u.Provider {
		case "ip2location":
			u.Edition = "DB1LITEBINIPV6"
		case "maxmind":
			u.Edition = "GeoLite2-Country"
		}
	}
}

// ErrDownload is wrapped by every download or verification failure.
var ErrDownload = errors.New("geo update")

// request builds the download request for u; its URL may carry a
// token and must not be printed (see redactURL).
func request(ctx context.Context, u Config, userAgent string) (*http.Request, error) {
	var raw string
	switch u.Provider {
	case "ip2location":
		if u.Token == "" {
			return nil, fmt.Errorf("%w: geo_update.token is needed for ip2location", ErrDownload)
		}
		base := u.URL
		if base == "" {
			base = ip2locationURL
		}
		pu, err := url.Parse(base)
		if err != nil {
			return nil, fmt.Errorf("%w: geo_update.url: %v", ErrDownload, err)
		}
		q := pu.Query()
		q.Set("token", u.Token)
		q.Set("file", u.Edition)
		pu.RawQuery = q.Encode()
		raw = pu.String()
	case "maxmind":
		if u.AccountID == "" || u.LicenseKey == "" {
			return nil, fmt.Errorf("%w: geo_update.account_id and license_key are needed for maxmind", ErrDownload)
		}
		raw = u.URL
		if raw == "" {
			raw = maxmindURL + url.PathEscape(u.Edition) + "/download?suffix=tar.gz"
		}
	case "url":
		raw = u.URL
	default:
		return nil, fmt.Errorf("%w: geo_update.provider or geo_update.url must be set", ErrDownload)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, raw, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDownload, err)
	}
	if u.Provider == "maxmind" {
		req.SetBasicAuth(u.AccountID, u.LicenseKey)
	}
	req.Header.Set("User-Agent", userAgent)
	return req, nil
}

// redactURL drops the query (tokens) and user info from a URL for
// messages.
func redactURL(u *url.URL) string {
	c := *u
	c.User = nil
	if c.RawQuery != "" {
		c.RawQuery = "..."
	}
	return c.String()
}

// Update downloads, unpacks, verifies and installs the database u names,
// with hc, sending userAgent. Every failure wraps ErrDownload and leaves
// the old file in place.
func Update(ctx context.Context, u Config, hc *http.Client, userAgent string) (geo.DBInfo, error) {
	if u.File == "" || u.File == geo.EmbeddedName {
		return geo.DBInfo{}, fmt.Errorf("%w: no database file to replace: set geo_update.file or list a file in geo.databases", ErrDownload)
	}
	req, err := request(ctx, u, userAgent)
	if err != nil {
		return geo.DBInfo{}, err
	}
	dir := filepath.Dir(u.File)
	dl, err := os.CreateTemp(dir, ".mailgate-download-*")
	if err != nil {
		return geo.DBInfo{}, fmt.Errorf("%w: %v", ErrDownload, err)
	}
	defer os.Remove(dl.Name())
	defer dl.Close()
	if err := download(hc, req, dl, u.MaxSize); err != nil {
		return geo.DBInfo{}, err
	}
	out, err := os.CreateTemp(dir, ".mailgate-new-*"+strings.ToUpper(filepath.Ext(u.File)))
	if err != nil {
		return geo.DBInfo{}, fmt.Errorf("%w: %v", ErrDownload, err)
	}
	installed := false
	defer func() {
		if !installed {
			os.Remove(out.Name())
		}
	}()
	defer out.Close()
	if err := unpack(dl, out, u.MaxSize); err != nil {
		return geo.DBInfo{}, err
	}
	if err := out.Sync(); err != nil {
		return geo.DBInfo{}, fmt.Errorf("%w: %v", ErrDownload, err)
	}
	if err := out.Close(); err != nil {
		return geo.DBInfo{}, fmt.Errorf("%w: %v", ErrDownload, err)
	}
	info, err := verify(out.Name(), u.File)
	if err != nil {
		return geo.DBInfo{}, err
	}
	if err := os.Chmod(out.Name(), 0o644); err != nil {
		return geo.DBInfo{}, fmt.Errorf("%w: %v", ErrDownload, err)
	}
	if err := os.Rename(out.Name(), u.File); err != nil {
		return geo.DBInfo{}, fmt.Errorf("%w: %v", ErrDownload, err)
	}
	installed = true
	syncDir(dir)
	info.File, info.Name = u.File, filepath.Base(u.File)
	return info, nil
}

// download copies the response body to w, at most max octets.
func download(hc *http.Client, req *http.Request, w io.Writer, max int64) error {
	where := redactURL(req.URL)
	resp, err := hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // url.Error would print the URL with its token
		}
		return fmt.Errorf("%w: GET %s: %v", ErrDownload, where, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		return fmt.Errorf("%w: GET %s: %s: %q", ErrDownload, where, resp.Status, strings.TrimSpace(string(msg)))
	}
	n, err := io.Copy(w, io.LimitReader(resp.Body, max+1))
	if err != nil {
		return fmt.Errorf("%w: GET %s: %v", ErrDownload, where, err)
	}
	if n > max {
		return fmt.Errorf("%w: GET %s: larger than geo_update.max_size (%d octets)", ErrDownload, where, max)
	}
	return nil
}

// isDBName reports whether an archive member is a database file.
func isDBName(name string) bool {
	ext := strings.ToLower(filepath.Ext(name))
	return ext == ".bin" || ext == ".mmdb"
}

// unpack writes the database inside f (a bare file, ZIP, gzip or
// tar.gz) to out, at most max octets.
func unpack(f *os.File, out io.Writer, max int64) error {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("%w: %v", ErrDownload, err)
	}
	br := bufio.NewReader(f)
	magic, _ := br.Peek(4)
	switch {
	case bytes.HasPrefix(magic, []byte("PK\x03\x04")):
		st, err := f.Stat()
		if err != nil {
			return fmt.Errorf("%w: %v", ErrDownload, err)
		}
		zr, err := zip.NewReader(f, st.Size())
		if err != nil {
			return fmt.Errorf("%w: bad ZIP archive: %v", ErrDownload, err)
		}
		for _, zf := range zr.File {
			if !isDBName(zf.Name) {
				continue
			}
			rc, err := zf.Open()
			if err != nil {
				return fmt.Errorf("%w: ZIP member %s: %v", ErrDownload, zf.Name, err)
			}
			defer rc.Close()
			return copyMax(out, rc, max, zf.Name)
		}
		return fmt.Errorf("%w: ZIP archive holds no .BIN or .mmdb file", ErrDownload)
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return fmt.Errorf("%w: bad gzip data: %v", ErrDownload, err)
		}
		gr := bufio.NewReader(zr)
		// A tar header has "ustar" at offset 257.
		if h, _ := gr.Peek(262); len(h) == 262 && string(h[257:262]) == "ustar" {
			tr := tar.NewReader(gr)
			for {
				hdr, err := tr.Next()
				if err == io.EOF {
					return fmt.Errorf("%w: tar archive holds no .BIN or .mmdb file", ErrDownload)
				}
				if err != nil {
					return fmt.Errorf("%w: bad tar archive: %v", ErrDownload, err)
				}
				if hdr.Typeflag == tar.TypeReg && isDBName(hdr.Name) {
					return copyMax(out, tr, max, hdr.Name)
				}
			}
		}
		return copyMax(out, gr, max, "gzip data")
	}
	return copyMax(out, br, max, "download")
}

func copyMax(w io.Writer, r io.Reader, max int64, what string) error {
	n, err := io.Copy(w, io.LimitReader(r, max+1))
	if err != nil {
		return fmt.Errorf("%w: unpacking %s: %v", ErrDownload, what, err)
	}
	if n > max {
		return fmt.Errorf("%w: %s unpacks to more than geo_update.max_size (%d octets)", ErrDownload, what, max)
	}
	return nil
}

// verify opens the new file with the reader serve uses and refuses a
// database of a different format than the one it replaces, or one older
// than it.
func verify(newPath, oldPath string) (geo.DBInfo, error) {
	quiet := slog.New(slog.DiscardHandler)
	db, err := geo.Open(geo.Config{Databases: []string{newPath}, WatchInterval: -1}, quiet)
	if err != nil {
		return geo.DBInfo{}, fmt.Errorf("%w: the downloaded file is not a usable database: %v", ErrDownload, err)
	}
	infos := db.Info()
	if len(infos) == 0 {
		return geo.DBInfo{}, fmt.Errorf("%w: the downloaded file is not a usable database", ErrDownload)
	}
	info := infos[0]
	if old, err := geo.Open(geo.Config{Databases: []string{oldPath}, WatchInterval: -1}, quiet); err == nil && len(old.Info()) > 0 {
		oi := old.Info()[0]
		if oi.Format != info.Format {
			return info, fmt.Errorf("%w: the download is %s but %s is %s; check geo_update.edition", ErrDownload, info.Format, oldPath, oi.Format)
		}
		if info.Built.Before(oi.Built) {
			return info, fmt.Errorf("%w: the download (built %s) is older than %s (built %s)", ErrDownload,
				info.Built.Format(time.DateOnly), oldPath, oi.Built.Format(time.DateOnly))
		}
	}
	return info, nil
}

// syncDir makes the rename durable; errors only cost durability.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}
