package geo

// Test helpers that write small IP2Location BIN and MaxMind DB files, so
// edge cases (first and last address of a range, gaps, IPv6, IPv4-only
// editions, region and city) are tested on files we control.

import (
	"encoding/binary"
	"net/netip"
	"sort"
	"time"
)

// binRow is one row of a test BIN: the range starts at from and runs to
// the next row's start. Code "-" means "not placed".
type binRow struct {
	from         netip.Addr
	code, name   string
	region, city string // DB3 only
}

// binSpec describes a test BIN file.
type binSpec struct {
	dbType   uint8 // 1 or 3
	v4, v6   []binRow
	noIPv6   bool // the IPv4-only edition
	date     [3]uint8
	fileSize bool // write the file size into the header (files since 2021)
}

// writeBIN writes a BIN file in the layout ip2location-go v9 reads. Rows
// must be sorted; a first row at address 0 and a final sentinel row at the
// last address are added.
func writeBIN(s binSpec) []byte {
	if s.dbType == 0 {
		s.dbType = 1
	}
	if s.date == [3]uint8{} {
		s.date = [3]uint8{26, 6, 17}
	}
	cols := uint8(2)
	if s.dbType >= 3 {
		cols = 4
	}
	v4 := append([]binRow{{from: netip.IPv4Unspecified(), code: "-", name: "-"}}, s.v4...)
	if len(s.v4) > 0 && s.v4[0].from == netip.IPv4Unspecified() {
		v4 = s.v4
	}
	v4 = append(v4, binRow{from: netip.MustParseAddr("255.255.255.255"), code: "-", name: "-"})
	var v6 []binRow
	if !s.noIPv6 {
		v6 = append([]binRow{{from: netip.IPv6Unspecified(), code: "-", name: "-"}}, s.v6...)
		if len(s.v6) > 0 && s.v6[0].from == netip.IPv6Unspecified() {
			v6 = s.v6
		}
		v6 = append(v6, binRow{from: netip.MustParseAddr("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), code: "-", name: "-"})
	}
	row4 := int(cols) * 4
	row6 := 16 + (int(cols)-1)*4
	v4Addr := 64 + 1
	v6Addr := v4Addr + len(v4)*row4
	strBase := v6Addr - 1 + len(v6)*row6
	b := make([]byte, strBase)
	ptrs := map[string]uint32{}
	country := func(code, name string) uint32 {
		k := "c:" + code + "\x00" + name
		if p, ok := ptrs[k]; ok {
			return p
		}
		p := uint32(len(b))
		// The code, then the name three bytes later (ip2location-go
		// reads the name at pointer+3).
		c := []byte(code + "  ")[:2]
		if code == "-" {
			c = []byte{'-', 0}
			b = append(b, 1)
		} else {
			b = append(b, 2)
		}
		b = append(b, c...)
		b = append(b, byte(len(name)))
		b = append(b, name...)
		ptrs[k] = p
		return p
	}
	str := func(v string) uint32 {
		k := "s:" + v
		if p, ok := ptrs[k]; ok {
			return p
		}
		p := uint32(len(b))
		b = append(b, byte(len(v)))
		b = append(b, v...)
		ptrs[k] = p
		return p
	}
	le := binary.LittleEndian
	putCols := func(off int, r binRow) {
		cp := country(r.code, r.name) // may grow b: call before indexing b
		le.PutUint32(b[off:], cp)
		if s.dbType >= 3 {
			reg, city := r.region, r.city
			if reg == "" {
				reg = "-"
			}
			if city == "" {
				city = "-"
			}
			rp, ccp := str(reg), str(city)
			le.PutUint32(b[off+4:], rp)
			le.PutUint32(b[off+8:], ccp)
		}
	}
	for i, r := range v4 {
		off := v4Addr - 1 + i*row4
		a := r.from.As4()
		le.PutUint32(b[off:], binary.BigEndian.Uint32(a[:]))
		putCols(off+4, r)
	}
	for i, r := range v6 {
		off := v6Addr - 1 + i*row6
		a := r.from.As16()
		le.PutUint64(b[off:], binary.BigEndian.Uint64(a[8:]))
		le.PutUint64(b[off+8:], binary.BigEndian.Uint64(a[:8]))
		putCols(off+16, r)
	}
	b[0], b[1] = s.dbType, cols
	b[2], b[3], b[4] = s.date[0], s.date[1], s.date[2]
	le.PutUint32(b[5:], uint32(len(v4)))
	le.PutUint32(b[9:], uint32(v4Addr))
	le.PutUint32(b[13:], uint32(len(v6)))
	if len(v6) > 0 {
		le.PutUint32(b[17:], uint32(v6Addr))
	}
	b[29] = 1 // product code: IP2Location IP geolocation
	if s.fileSize {
		le.PutUint32(b[31:], uint32(len(b)))
	}
	return b
}

// mmdbNet is one network of a test MaxMind DB with its record.
type mmdbNet struct {
	p   netip.Prefix
	rec map[string]any
}

// mmdbSpec describes a test MaxMind DB (record size 24).
type mmdbSpec struct {
	ipVersion int // 4 or 6
	dbType    string
	built     time.Time
	nets      []mmdbNet
}

// mmdbRec is a tree record: empty, a node, or data.
type mmdbRec struct {
	kind int // 0 empty, 1 node, 2 data
	v    int // node index or data offset
}

// writeMMDB writes a MaxMind DB file (spec version 2.0).
func writeMMDB(s mmdbSpec) []byte {
	if s.ipVersion == 0 {
		s.ipVersion = 6
	}
	if s.dbType == "" {
		s.dbType = "mailgate-test-country"
	}
	if s.built.IsZero() {
		s.built = time.Date(2026, 6, 17, 19, 51, 40, 0, time.UTC)
	}
	var data []byte
	offsets := map[int]int{}
	nodes := [][2]mmdbRec{{}}
	for ni, n := range s.nets {
		off, ok := offsets[ni]
		if !ok {
			off = len(data)
			data = mmdbEncode(data, n.rec)
			offsets[ni] = off
		}
		addr, bits := n.p.Addr(), n.p.Bits()
		if s.ipVersion == 6 && addr.Is4() {
			addr = netip.AddrFrom16(addr.As16()) // ::a.b.c.d, as the IPv4 subtree
			b16 := addr.As16()
			for i := 10; i < 12; i++ {
				b16[i] = 0
			}
			addr = netip.AddrFrom16(b16)
			bits += 96
		}
		ab := addr.AsSlice()
		node := 0
		for depth := 0; depth < bits; depth++ {
			bit := (ab[depth/8] >> (7 - depth%8)) & 1
			if depth == bits-1 {
				nodes[node][bit] = mmdbRec{kind: 2, v: off}
				break
			}
			next := nodes[node][bit]
			if next.kind != 1 {
				nodes = append(nodes, [2]mmdbRec{next, next}) // split a covering record
				nodes[node][bit] = mmdbRec{kind: 1, v: len(nodes) - 1}
			}
			node = nodes[node][bit].v
		}
	}
	nc := len(nodes)
	var out []byte
	for _, n := range nodes {
		for _, r := range n {
			var v int
			switch r.kind {
			case 0:
				v = nc
			case 1:
				v = r.v
			case 2:
				v = nc + 16 + r.v
			}
			out = append(out, byte(v>>16), byte(v>>8), byte(v))
		}
	}
	out = append(out, make([]byte, 16)...)
	out = append(out, data...)
	out = append(out, mmdbMetadataMarker...)
	out = mmdbEncode(out, map[string]any{
		"binary_format_major_version": uint16(2),
		"binary_format_minor_version": uint16(0),
		"build_epoch":                 uint64(s.built.Unix()),
		"database_type":               s.dbType,
		"description":                 map[string]any{"en": "mailgate test database"},
		"ip_version":                  uint16(s.ipVersion),
		"languages":                   []any{"en"},
		"node_count":                  uint32(nc),
		"record_size":                 uint16(24),
	})
	return out
}

// mmdbEncode appends v in the MaxMind DB data encoding (strings, maps,
// arrays, unsigned integers; sizes below 285).
func mmdbEncode(b []byte, v any) []byte {
	ctrl := func(b []byte, typ, size int) []byte {
		var first byte
		var ext []byte
		if typ > 7 {
			ext = []byte{byte(typ - 7)}
		} else {
			first = byte(typ << 5)
		}
		if size < 29 {
			first |= byte(size)
			b = append(b, first)
			b = append(b, ext...)
			return b
		}
		first |= 29
		b = append(b, first)
		b = append(b, ext...)
		return append(b, byte(size-29))
	}
	switch x := v.(type) {
	case string:
		b = ctrl(b, 2, len(x))
		return append(b, x...)
	case uint16:
		return mmdbUint(ctrl, b, 5, uint64(x))
	case uint32:
		return mmdbUint(ctrl, b, 6, uint64(x))
	case uint64:
		return mmdbUint(ctrl, b, 9, x)
	case []any:
		b = ctrl(b, 11, len(x))
		for _, e := range x {
			b = mmdbEncode(b, e)
		}
		return b
	case map[string]any:
		b = ctrl(b, 7, len(x))
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			b = mmdbEncode(b, k)
			b = mmdbEncode(b, x[k])
		}
		return b
	}
	panic("mmdbEncode: unsupported type")
}

func mmdbUint(ctrl func([]byte, int, int) []byte, b []byte, typ int, x uint64) []byte {
	var buf []byte
	for x > 0 {
		buf = append([]byte{byte(x)}, buf...)
		x >>= 8
	}
	b = ctrl(b, typ, len(buf))
	return append(b, buf...)
}

// geoip2Rec is a GeoIP2-City-shaped record.
func geoip2Rec(code, name, region, city string) map[string]any {
	r := map[string]any{"country": map[string]any{"iso_code": code, "names": map[string]any{"en": name}}}
	if region != "" {
		r["subdivisions"] = []any{map[string]any{"names": map[string]any{"en": region}}}
	}
	if city != "" {
		r["city"] = map[string]any{"names": map[string]any{"en": city}}
	}
	return r
}

// ipLocRec is an ip-location-db-shaped record.
func ipLocRec(code string) map[string]any { return map[string]any{"country_code": code} }
