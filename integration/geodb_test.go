//go:build integration

package integration

import (
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"
)

// embeddedGeoGzip is the database mailgate embeds (geo/embed.go), in the
// repository.
const embeddedGeoGzip = "geo/data/geo-whois-asn-country.mmdb.gz"

// geoSection lists db, the embedded database decompressed, as the one
// geo database of a config that has no geo section; a config with one is
// left as it is. The data, and so every decision, is the same as with
// the embedded copy; what it saves is time: a mailgate built with -race
// takes 3 to 5 s of CPU to decompress its embedded copy at every start,
// against about 0.1 s to read the file, and the integration tests start
// mailgate more than a hundred times. The embedded path itself is tested
// by geo's tests and by the demo and container tests, whose configs are
// their own.
func geoSection(cfgYAML, db string) string {
	if db == "" {
		return cfgYAML
	}
	var top map[string]any
	if yaml.Unmarshal([]byte(cfgYAML), &top) != nil {
		return cfgYAML // the caller reports the parse error
	}
	if _, ok := top["geo"]; ok {
		return cfgYAML
	}
	if !strings.HasSuffix(cfgYAML, "\n") {
		cfgYAML += "\n"
	}
	return cfgYAML + fmt.Sprintf("geo: {databases: [%q]}\n", db)
}

// gunzipFile writes the decompressed content of src to dst.
func gunzipFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	zr, err := gzip.NewReader(in)
	if err != nil {
		return err
	}
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, zr); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
