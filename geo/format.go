package geo

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// Sentinel errors for database files; Open and Reload wrap them with the
// file name and the detail.
var (
	// ErrEmpty: the file has no bytes (a failed download, a touched path).
	ErrEmpty = errors.New("empty file")
	// ErrCompressed: a gzip or zip archive was configured instead of the
	// database inside it.
	ErrCompressed = errors.New("compressed file, unpack it first")
	// ErrFormat: the content is neither a MaxMind DB nor an IP2Location BIN.
	ErrFormat = errors.New("unknown database format")
	// ErrCorrupt: the file looks like a known format but fails validation
	// (truncated, inconsistent header, rows out of order, bad pointers).
	ErrCorrupt = errors.New("corrupt database")
	// ErrProbe: the database opened but did not answer the probe addresses
	// sensibly (it places none of them, or a reader failed on one).
	ErrProbe = errors.New("database failed the probe lookups")
)

// Format names a database file format as shown in DBInfo.Format.
type Format string

// The formats geo reads.
const (
	FormatMMDB        Format = "mmdb"
	FormatIP2Location Format = "ip2location"
)

// mmdbMetadataMarker starts the metadata section at the end of every MaxMind
// DB file (MaxMind DB spec, "Database Metadata").
var mmdbMetadataMarker = []byte("\xab\xcd\xefMaxMind.com")

// mmdbMetadataMaxSize bounds where the marker may sit: the spec caps the
// metadata section at 128 KiB, so we never scan a whole large file.
const mmdbMetadataMaxSize = 128 * 1024

// detectFormat tells the format from the content (never from the file
// name, which operators get wrong: a GeoLite2 tarball renamed to .mmdb).
// It is pure and cheap; the BIN header is fully checked here so that bytes
// reaching ip2location-go cannot trip its known panics.
func detectFormat(b []byte) (Format, error) {
	if len(b) == 0 {
		return "", ErrEmpty
	}
	if len(b) >= 2 && b[0] == 0x1f && b[1] == 0x8b {
		return "", fmt.Errorf("%w (gzip; geoipupdate and the MaxMind .tar.gz hold the .mmdb file)", ErrCompressed)
	}
	if bytes.HasPrefix(b, []byte("PK\x03\x04")) {
		return "", fmt.Errorf("%w (zip; the IP2Location download holds the .BIN file)", ErrCompressed)
	}
	tail := b
	if len(tail) > mmdbMetadataMaxSize {
		tail = tail[len(tail)-mmdbMetadataMaxSize:]
	}
	if bytes.Contains(tail, mmdbMetadataMarker) {
		return FormatMMDB, nil
	}
	if len(b) < binHeaderSize {
		return "", fmt.Errorf("%w: %d bytes is too short for any database", ErrFormat, len(b))
	}
	if !looksLikeBIN(b) {
		// A MaxMind DB has no magic number at the start, only metadata at
		// the end, so a truncated one lands here: say so.
		return "", fmt.Errorf("%w: neither a MaxMind DB (no metadata marker in the last %d KiB; a truncated .mmdb loses it) nor an IP2Location BIN (header type %d, %d columns, date %d-%d-%d)",
			ErrFormat, mmdbMetadataMaxSize/1024, b[0], b[1], b[2], b[3], b[4])
	}
	// It starts like a BIN, so a failure from here on is a damaged BIN
	// (typically a truncated download), not a different format.
	if _, err := parseBINHeader(b); err != nil {
		return "", fmt.Errorf("IP2Location BIN: %w", err)
	}
	return FormatIP2Location, nil
}

// looksLikeBIN reports whether the first header bytes are plausible for a
// BIN: a known type, a column count and a calendar date.
func looksLikeBIN(b []byte) bool {
	return b[0] >= 1 && b[0] <= binMaxType && b[1] >= 2 && b[1] <= binMaxColumns &&
		b[3] >= 1 && b[3] <= 12 && b[4] >= 1 && b[4] <= 31
}

// IP2Location BIN layout, as read by ip2location-go v9 (ip2location.go,
// OpenDBWithReader and query). All offsets in the header are 1-based; all
// integers are little-endian.
const (
	// binHeaderSize is the fixed header the library reads first.
	binHeaderSize = 64
	// binMaxType: the library indexes [27]uint8 position tables by the
	// type byte, so a type of 27 or more panics inside it.
	binMaxType = 26
	// binMaxColumns keeps the library's uint8 arithmetic `column << 2`
	// from wrapping (it does at 64); the widest real DB (DB26) has 29.
	binMaxColumns = 40
	// binIndexEntries: the optional index has one 8-byte (low, high) row
	// per value of the address's top 16 bits.
	binIndexEntries = 65536
)

// binHeader is the decoded 64-byte header of an IP2Location BIN file.
type binHeader struct {
	dbType, columns  uint8
	year, month, day uint8 // year is two digits (26 = 2026)
	v4Count, v4Addr  uint32
	v6Count, v6Addr  uint32
	v4Index, v6Index uint32
	productCode      uint8
	fileSize         uint32 // 0 in files older than 2021
}

// minColumns is how many columns a DB type needs for the fields geo reads:
// country in column 2 for every type, region and city in 3 and 4 from DB3
// on (ip2location-go country_position, region_position, city_position).
func minColumns(dbType uint8) uint8 {
	if dbType >= 3 {
		return 4
	}
	return 2
}

// v4RowSize and v6RowSize are the byte sizes of one row: the first column
// is the range start (4 or 16 bytes), every other column 4 bytes.
func (h binHeader) v4RowSize() uint64 { return uint64(h.columns) * 4 }
func (h binHeader) v6RowSize() uint64 { return 16 + (uint64(h.columns)-1)*4 }

// parseBINHeader decodes and checks the header against the file length:
// every section and index the library or our reader will touch must lie
// inside the file. It is pure and fuzzed (FuzzParseBINHeader).
func parseBINHeader(b []byte) (binHeader, error) {
	if len(b) < binHeaderSize {
		return binHeader{}, fmt.Errorf("%w: %d bytes, shorter than the %d-byte BIN header", ErrCorrupt, len(b), binHeaderSize)
	}
	le := binary.LittleEndian
	h := binHeader{
		dbType:      b[0],
		columns:     b[1],
		year:        b[2],
		month:       b[3],
		day:         b[4],
		v4Count:     le.Uint32(b[5:]),
		v4Addr:      le.Uint32(b[9:]),
		v6Count:     le.Uint32(b[13:]),
		v6Addr:      le.Uint32(b[17:]),
		v4Index:     le.Uint32(b[21:]),
		v6Index:     le.Uint32(b[25:]),
		productCode: b[29],
		fileSize:    le.Uint32(b[31:]),
	}
	size := uint64(len(b))
	switch {
	case h.dbType == 0 || h.dbType > binMaxType:
		return h, fmt.Errorf("%w: BIN database type %d, want 1 to %d", ErrCorrupt, h.dbType, binMaxType)
	case h.columns < minColumns(h.dbType) || h.columns > binMaxColumns:
		return h, fmt.Errorf("%w: BIN DB%d with %d columns, want %d to %d", ErrCorrupt, h.dbType, h.columns, minColumns(h.dbType), binMaxColumns)
	case h.month < 1 || h.month > 12 || h.day < 1 || h.day > 31:
		return h, fmt.Errorf("%w: BIN header date 20%02d-%02d-%02d is not a date", ErrCorrupt, h.year, h.month, h.day)
	case h.year >= 21 && h.productCode != 1:
		// The library's own check: BINs since 2021 carry product code 1.
		return h, fmt.Errorf("%w: BIN product code %d, want 1 (IP2Location IP geolocation)", ErrCorrupt, h.productCode)
	case h.fileSize != 0 && uint64(h.fileSize) > size:
		return h, fmt.Errorf("%w: truncated: the BIN header says %d bytes, the file has %d", ErrCorrupt, h.fileSize, size)
	case h.fileSize != 0 && uint64(h.fileSize) < size:
		return h, fmt.Errorf("%w: the BIN header says %d bytes, the file has %d", ErrCorrupt, h.fileSize, size)
	case h.v4Count < 1:
		return h, fmt.Errorf("%w: BIN has no IPv4 rows", ErrCorrupt)
	}
	if err := checkSection(size, "IPv4", h.v4Addr, h.v4Count, h.v4RowSize()); err != nil {
		return h, err
	}
	if h.v6Count > 0 {
		if err := checkSection(size, "IPv6", h.v6Addr, h.v6Count, h.v6RowSize()); err != nil {
			return h, err
		}
	}
	if err := checkIndex(b, "IPv4", h.v4Index, h.v4Count); err != nil {
		return h, err
	}
	if h.v6Count > 0 {
		if err := checkIndex(b, "IPv6", h.v6Index, h.v6Count); err != nil {
			return h, err
		}
	}
	return h, nil
}

// checkSection verifies that count rows of rowSize bytes from the 1-based
// offset addr fit in the file and start after the header.
func checkSection(size uint64, family string, addr, count uint32, rowSize uint64) error {
	if addr <= binHeaderSize {
		return fmt.Errorf("%w: BIN %s rows start at %d, inside the header", ErrCorrupt, family, addr)
	}
	end := uint64(addr-1) + uint64(count)*rowSize
	if end > size {
		return fmt.Errorf("%w: truncated: BIN %s rows end at byte %d, the file has %d", ErrCorrupt, family, end, size)
	}
	return nil
}

// checkIndex verifies the optional index: inside the file, and every
// (low, high) row inside the section, so the library's binary search stays
// in bounds. addr 0 means "no index".
func checkIndex(b []byte, family string, addr, count uint32) error {
	if addr == 0 {
		return nil
	}
	if addr <= binHeaderSize {
		return fmt.Errorf("%w: BIN %s index starts at %d, inside the header", ErrCorrupt, family, addr)
	}
	start := uint64(addr - 1)
	end := start + binIndexEntries*8
	if end > uint64(len(b)) {
		return fmt.Errorf("%w: truncated: BIN %s index ends at byte %d, the file has %d", ErrCorrupt, family, end, len(b))
	}
	le := binary.LittleEndian
	for i := uint64(0); i < binIndexEntries; i++ {
		low := le.Uint32(b[start+i*8:])
		high := le.Uint32(b[start+i*8+4:])
		if low > high || high >= count {
			return fmt.Errorf("%w: BIN %s index entry %d is (%d, %d) for %d rows", ErrCorrupt, family, i, low, high, count)
		}
	}
	return nil
}
