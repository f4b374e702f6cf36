package geo

import (
	"crypto/sha256"
	"encoding/hex"
	"testing"
)

// The embedded database decompresses to the upstream file byte for byte:
// the size and sha256 geo/data/README.md records for the npm package's
// geo-whois-asn-country.mmdb.
func TestEmbeddedIsUpstreamFile(t *testing.T) {
	b, err := embeddedMMDB()
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	const want = "c5f7c0e9bd6a6ccb5a2e9634764544a0d08bd0bd8788b8aedfac87bea184c652"
	if len(b) != 7841291 || hex.EncodeToString(sum[:]) != want {
		t.Fatalf("embedded database: %d bytes, sha256 %x; want 7841291 bytes, sha256 %s", len(b), sum, want)
	}
	again, _ := embeddedMMDB()
	if &again[0] != &b[0] {
		t.Error("embedded database decompressed twice; it must be shared")
	}
}
