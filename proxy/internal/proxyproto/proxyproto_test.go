package proxyproto

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// encodeV1 writes h as a v1 line, the way haproxy and nginx do.
func encodeV1(h Header) []byte {
	if h.Local {
		return []byte("PROXY UNKNOWN\r\n")
	}
	proto := "TCP6"
	if h.Src.Addr().Is4() {
		proto = "TCP4"
	}
	return fmt.Appendf(nil, "PROXY %s %s %s %d %d\r\n", proto,
		h.Src.Addr(), h.Dst.Addr(), h.Src.Port(), h.Dst.Port())
}

// encodeV2 writes h as a v2 header followed by tlvs (already encoded).
func encodeV2(h Header, tlvs []byte) []byte {
	b := append([]byte(nil), v2Sig...)
	if h.Local {
		b = append(b, v2Version<<4|v2CmdLocal, 0)
		return binary.BigEndian.AppendUint16(b, 0)
	}
	var addrs []byte
	fam := byte(v2FamInet6)
	if h.Src.Addr().Is4() {
		fam = v2FamInet
	}
	addrs = append(addrs, h.Src.Addr().AsSlice()...)
	addrs = append(addrs, h.Dst.Addr().AsSlice()...)
	addrs = binary.BigEndian.AppendUint16(addrs, h.Src.Port())
	addrs = binary.BigEndian.AppendUint16(addrs, h.Dst.Port())
	addrs = append(addrs, tlvs...)
	b = append(b, v2Version<<4|v2CmdProxy, fam<<4|v2ProtStream)
	b = binary.BigEndian.AppendUint16(b, uint16(len(addrs)))
	return append(b, addrs...)
}

func tlv(typ byte, v string) []byte {
	b := []byte{typ}
	b = binary.BigEndian.AppendUint16(b, uint16(len(v)))
	return append(b, v...)
}

var (
	ap4a = netip.MustParseAddrPort("192.0.2.10:54321")
	ap4b = netip.MustParseAddrPort("127.0.0.1:993")
	ap6a = netip.MustParseAddrPort("[2001:db8::1]:1")
	ap6b = netip.MustParseAddrPort("[::1]:65535")
)

// readAll runs Read over in and returns the header and what is left for
// the protocol that follows.
func readAll(in []byte) (Header, []byte, error) {
	r := bufio.NewReader(bytes.NewReader(in))
	h, err := Read(r)
	rest, _ := io.ReadAll(r)
	return h, rest, err
}

func TestReadValid(t *testing.T) {
	const next = "a1 CAPABILITY\r\n"
	tests := []struct {
		name string
		in   []byte
		want Header
	}{
		{"v1 tcp4", []byte("PROXY TCP4 192.0.2.10 127.0.0.1 54321 993\r\n"), Header{Version: 1, Src: ap4a, Dst: ap4b}},
		{"v1 tcp6", []byte("PROXY TCP6 2001:db8::1 ::1 1 65535\r\n"), Header{Version: 1, Src: ap6a, Dst: ap6b}},
		{"v1 port 0", []byte("PROXY TCP4 192.0.2.10 127.0.0.1 0 0\r\n"), Header{Version: 1,
			Src: netip.AddrPortFrom(ap4a.Addr(), 0), Dst: netip.AddrPortFrom(ap4b.Addr(), 0)}},
		{"v1 unknown", []byte("PROXY UNKNOWN\r\n"), Header{Version: 1, Local: true}},
		{"v1 unknown with addresses", []byte("PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n"), Header{Version: 1, Local: true}},
		{"v1 longest", []byte("PROXY UNKNOWN " + strings.Repeat("x", maxV1Line-len("PROXY UNKNOWN ")-2) + "\r\n"), Header{Version: 1, Local: true}},
		{"v2 inet", encodeV2(Header{Src: ap4a, Dst: ap4b}, nil), Header{Version: 2, Src: ap4a, Dst: ap4b}},
		{"v2 inet6", encodeV2(Header{Src: ap6a, Dst: ap6b}, nil), Header{Version: 2, Src: ap6a, Dst: ap6b}},
		{"v2 inet with TLVs", encodeV2(Header{Src: ap4a, Dst: ap4b}, append(tlv(0x02, "mail.example"), tlv(0x04, "")...)), Header{Version: 2, Src: ap4a, Dst: ap4b}},
		{"v2 local", encodeV2(Header{Local: true}, nil), Header{Version: 2, Local: true}},
		{"v2 local with addresses", func() []byte {
			b := encodeV2(Header{Src: ap4a, Dst: ap4b}, nil)
			b[12] = v2Version<<4 | v2CmdLocal
			return b
		}(), Header{Version: 2, Local: true}},
		{"v2 unspec family", func() []byte {
			b := encodeV2(Header{Src: ap4a, Dst: ap4b}, nil)
			b[13] = v2FamUnspec<<4 | v2ProtStream
			return b
		}(), Header{Version: 2, Local: true}},
		{"v2 largest", encodeV2(Header{Src: ap4a, Dst: ap4b}, tlv(0x04, strings.Repeat("p", maxV2Header-v2HeaderLen-v2Inet4Len-3))), Header{Version: 2, Src: ap4a, Dst: ap4b}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, rest, err := readAll(append(append([]byte(nil), tt.in...), next...))
			if err != nil {
				t.Fatalf("Read(%q) error %v", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("Read(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
			if string(rest) != next {
				t.Errorf("Read(%q) left %q, want %q", tt.in, rest, next)
			}
		})
	}
}

func TestReadMalformed(t *testing.T) {
	v2 := func(mod func(b []byte) []byte) []byte {
		return mod(encodeV2(Header{Src: ap4a, Dst: ap4b}, nil))
	}
	tests := []struct {
		name string
		in   []byte
	}{
		{"plain command", []byte("a1 LOGIN alice secret\r\n")},
		{"ehlo", []byte("EHLO x\r\n")},
		{"lower case", []byte("proxy TCP4 192.0.2.10 127.0.0.1 54321 993\r\n")},
		{"PROXYX", []byte("PROXYX TCP4 192.0.2.10 127.0.0.1 54321 993\r\n")},
		{"bare LF", []byte("PROXY TCP4 192.0.2.10 127.0.0.1 54321 993\n")},
		{"CR inside", []byte("PROXY TCP4 192.0.2.10\r127.0.0.1 54321 993\r\n")},
		{"too long", []byte("PROXY UNKNOWN " + strings.Repeat("x", maxV1Line) + "\r\n")},
		{"one too long", []byte("PROXY UNKNOWN " + strings.Repeat("x", maxV1Line-len("PROXY UNKNOWN ")-1) + "\r\n")},
		{"UNKNOWNX", []byte("PROXY UNKNOWNX\r\n")},
		{"bad proto", []byte("PROXY UDP4 192.0.2.10 127.0.0.1 54321 993\r\n")},
		{"tcp4 with v6", []byte("PROXY TCP4 2001:db8::1 ::1 1 2\r\n")},
		{"tcp6 with v4", []byte("PROXY TCP6 192.0.2.10 127.0.0.1 1 2\r\n")},
		{"zone", []byte("PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n")},
		{"leading zero octet", []byte("PROXY TCP4 192.0.2.010 127.0.0.1 1 2\r\n")},
		{"port too big", []byte("PROXY TCP4 192.0.2.10 127.0.0.1 65536 993\r\n")},
		{"port leading zero", []byte("PROXY TCP4 192.0.2.10 127.0.0.1 054321 993\r\n")},
		{"port sign", []byte("PROXY TCP4 192.0.2.10 127.0.0.1 +1 993\r\n")},
		{"missing field", []byte("PROXY TCP4 192.0.2.10 127.0.0.1 54321\r\n")},
		{"extra field", []byte("PROXY TCP4 192.0.2.10 127.0.0.1 54321 993 1\r\n")},
		{"double space", []byte("PROXY TCP4  192.0.2.10 127.0.0.1 54321 993\r\n")},
		{"trailing space", []byte("PROXY TCP4 192.0.2.10 127.0.0.1 54321 993 \r\n")},
		{"v2 bad signature", v2(func(b []byte) []byte { b[11] = 'X'; return b })},
		{"v2 version 1", v2(func(b []byte) []byte { b[12] = 0x11; return b })},
		{"v2 command 2", v2(func(b []byte) []byte { b[12] = 0x22; return b })},
		{"v2 family 4", v2(func(b []byte) []byte { b[13] = 0x41; return b })},
		{"v2 protocol 3", v2(func(b []byte) []byte { b[13] = 0x13; return b })},
		{"v2 unix", v2(func(b []byte) []byte { b[13] = 0x31; return b })},
		{"v2 dgram", v2(func(b []byte) []byte { b[13] = 0x12; return b })},
		{"v2 short address block", v2(func(b []byte) []byte { binary.BigEndian.PutUint16(b[14:], 11); return b[:v2HeaderLen+11] })},
		{"v2 inet6 with inet block", v2(func(b []byte) []byte { b[13] = 0x21; return b })},
		{"v2 too long", v2(func(b []byte) []byte {
			binary.BigEndian.PutUint16(b[14:], maxV2Header-v2HeaderLen+1)
			return append(b, make([]byte, maxV2Header)...)
		})},
		{"v2 max length field", v2(func(b []byte) []byte { binary.BigEndian.PutUint16(b[14:], 0xffff); return b })},
		{"v2 TLV past end", encodeV2(Header{Src: ap4a, Dst: ap4b}, []byte{0x04, 0x00, 0x05, 'a'})},
		{"v2 truncated TLV", encodeV2(Header{Src: ap4a, Dst: ap4b}, []byte{0x04, 0x00})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, _, err := readAll(tt.in)
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("Read(%q) = %+v, %v; want ErrMalformed", tt.in, h, err)
			}
		})
	}
}

func TestReadTruncated(t *testing.T) {
	full := [][]byte{
		[]byte("PROXY TCP4 192.0.2.10 127.0.0.1 54321 993\r\n"),
		encodeV2(Header{Src: ap6a, Dst: ap6b}, tlv(1, "imap")),
	}
	for _, in := range full {
		for n := 0; n < len(in); n++ {
			_, _, err := readAll(in[:n])
			if err == nil {
				t.Fatalf("Read(%q) succeeded on a truncated header", in[:n])
			}
			if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("Read(%q) = %v, want an EOF error", in[:n], err)
			}
		}
	}
}

// TestReadDoesNotWaitPastHeader: a header followed by nothing (the client
// waits for our greeting) must be returned without waiting for more.
func TestReadDoesNotWaitPastHeader(t *testing.T) {
	for _, in := range [][]byte{
		[]byte("PROXY TCP4 192.0.2.10 127.0.0.1 54321 993\r\n"),
		[]byte("PROXY UNKNOWN\r\n"),
		encodeV2(Header{Src: ap4a, Dst: ap4b}, nil),
	} {
		pr, pw := io.Pipe()
		go func() {
			// Write byte by byte, then block forever (until the test
			// closes the pipe) like a client waiting for a greeting.
			for _, c := range in {
				if _, err := pw.Write([]byte{c}); err != nil {
					return
				}
			}
		}()
		done := make(chan error, 1)
		go func() {
			_, err := Read(bufio.NewReader(pr))
			done <- err
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Read(%q) = %v", in, err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Read(%q) blocked after the header was complete", in)
		}
		pw.Close()
	}
}

// TestReadFailsFast: garbage is refused on its first bytes, without
// waiting for a full line or a full v2 header.
func TestReadFailsFast(t *testing.T) {
	for _, in := range []string{"GET", "PROXX", "\r\nX"} {
		pr, pw := io.Pipe()
		go pw.Write([]byte(in))
		done := make(chan error, 1)
		go func() {
			_, err := Read(bufio.NewReader(pr))
			done <- err
		}()
		select {
		case err := <-done:
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("Read(%q) = %v, want ErrMalformed", in, err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Read(%q) waited for more bytes", in)
		}
		pw.Close()
	}
}

func TestReadSmallBuffer(t *testing.T) {
	in := encodeV2(Header{Src: ap4a, Dst: ap4b}, tlv(4, strings.Repeat("p", 100)))
	_, err := Read(bufio.NewReaderSize(bytes.NewReader(in), 16))
	if !errors.Is(err, bufio.ErrBufferFull) {
		t.Errorf("Read with a 16-byte buffer = %v, want ErrBufferFull", err)
	}
}

func TestLooksLikeHeader(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"", false},
		{"P", true},
		{"PROX", true},
		{"PROXY ", true},
		{"PROXY TCP4 1.2.3.4", true},
		{"PROXYX", false},
		{"PROXX", false},
		{"a1 LOGIN", false},
		{"EHLO", false},
		{"\r", true},
		{"\r\n\r\n\x00", true},
		{string(v2Sig), true},
		{string(v2Sig) + "\x21\x11", true},
		{"\r\n\r\n\x01", false},
		{"\r\nQUIT", false},
	}
	for _, tt := range tests {
		if got := LooksLikeHeader([]byte(tt.in)); got != tt.want {
			t.Errorf("LooksLikeHeader(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

// FuzzRead checks, for any input: no panic; on success the header used
// at most its limit, the bytes after it are untouched, the consumed
// bytes started with a signature, and re-encoding the result parses back
// to the same header.
func FuzzRead(f *testing.F) {
	f.Add([]byte("PROXY TCP4 192.0.2.10 127.0.0.1 54321 993\r\nA1 NOOP\r\n"))
	f.Add([]byte("PROXY TCP6 2001:db8::1 ::1 1 65535\r\n"))
	f.Add([]byte("PROXY UNKNOWN\r\n"))
	f.Add(encodeV2(Header{Src: ap4a, Dst: ap4b}, tlv(1, "h2")))
	f.Add(encodeV2(Header{Src: ap6a, Dst: ap6b}, nil))
	f.Add(encodeV2(Header{Local: true}, nil))
	f.Add([]byte("EHLO x\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		br := bytes.NewReader(in)
		r := bufio.NewReader(br)
		h, err := Read(r)
		if err != nil {
			return
		}
		rest, _ := io.ReadAll(r)
		n := len(in) - len(rest)
		if !bytes.Equal(rest, in[n:]) {
			t.Fatalf("bytes after the header were changed")
		}
		hdr := in[:n]
		switch h.Version {
		case 1:
			if n > maxV1Line || !bytes.HasPrefix(hdr, v1Sig) || !bytes.HasSuffix(hdr, []byte("\r\n")) ||
				bytes.IndexByte(hdr, '\n') != n-1 {
				t.Fatalf("v1 header %q consumed wrongly", hdr)
			}
		case 2:
			if n > maxV2Header || !bytes.HasPrefix(hdr, v2Sig) || n != v2HeaderLen+int(binary.BigEndian.Uint16(hdr[14:16])) {
				t.Fatalf("v2 header %q consumed wrongly", hdr)
			}
		default:
			t.Fatalf("version %d", h.Version)
		}
		if h.Local != (h.Src == netip.AddrPort{}) || h.Src.IsValid() != h.Dst.IsValid() {
			t.Fatalf("inconsistent header %+v", h)
		}
		if h.Local {
			return
		}
		enc := encodeV1(h)
		if h.Version == 2 {
			enc = encodeV2(h, nil)
		}
		h2, rest2, err := readAll(enc)
		if err != nil || h2 != h || len(rest2) != 0 {
			t.Fatalf("round trip of %+v: %+v, %v", h, h2, err)
		}
	})
}

func BenchmarkReadV1(b *testing.B) {
	in := []byte("PROXY TCP4 192.0.2.10 127.0.0.1 54321 993\r\n")
	br := bytes.NewReader(in)
	r := bufio.NewReader(br)
	b.ReportAllocs()
	for b.Loop() {
		br.Reset(in)
		r.Reset(br)
		if _, err := Read(r); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReadV2(b *testing.B) {
	in := encodeV2(Header{Src: ap6a, Dst: ap6b}, tlv(1, "imap"))
	br := bytes.NewReader(in)
	r := bufio.NewReader(br)
	b.ReportAllocs()
	for b.Loop() {
		br.Reset(in)
		r.Reset(br)
		if _, err := Read(r); err != nil {
			b.Fatal(err)
		}
	}
}
