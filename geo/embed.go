package geo

import (
	"bytes"
	"compress/gzip"
	_ "embed"
	"fmt"
	"io"
	"sync"
)

// embeddedMMDBGzip is the default database, geo-whois-asn-country
// 2.3.2026061719 from sapics/ip-location-db (NRO data under CC BY 4.0),
// stored gzip-compressed: the MMDB takes 7.8 MB, compressed 3.9 MB, and
// the binary (and the container image, whose target is under 25 MB)
// carries only the compressed bytes. See geo/data/README.md for source,
// licence, attribution, the checksums, and why it is meant for tests and
// as a fallback, not as the production database.
//
//go:embed data/geo-whois-asn-country.mmdb.gz
var embeddedMMDBGzip []byte

// embeddedMMDB returns the decompressed default database. It is
// decompressed once per process and shared: readers only read the bytes,
// and a reload that opens "embedded" again costs nothing.
var embeddedMMDB = sync.OnceValues(func() ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(embeddedMMDBGzip))
	if err != nil {
		return nil, fmt.Errorf("decompressing: %w", err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		return nil, fmt.Errorf("decompressing: %w", err)
	}
	return b, nil
})
