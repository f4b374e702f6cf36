// Package proxyproto reads one PROXY protocol header (version 1 text or
// version 2 binary, haproxy's proxy-protocol.txt) from the front of a
// connection, so mailgate learns the real client address when it sits
// behind a load balancer.
//
// It is a pure parser: no net, no logging, no policy. Whether a header is
// trusted (ProxyFrom) and what to do with the addresses is the caller's
// business.
//
// # Implementation notes
//
// Read consumes exactly the header and never a byte more from the
// bufio.Reader, so the protocol code that follows sees the client's first
// command untouched. It never waits for more bytes than the header can
// still need: a v1 line is inspected as bytes arrive (a peer that sends 50
// bytes and waits must not block us until 107 arrive), and a v2 header is
// read only as far as its own length field says, after that field is
// checked against maxV2Header. The bufio.Reader must hold at least
// maxV2Header bytes (the default 4096 does).
package proxyproto

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
)

// ErrMalformed wraps every rejection of the bytes on the wire: not a
// header, a bad field, a header longer than allowed.
var ErrMalformed = errors.New("proxyproto: malformed header")

// Header is one parsed PROXY header.
type Header struct {
	// Version is 1 (text) or 2 (binary).
	Version int
	// Local is true when the header carries no client address: a v2
	// LOCAL command (health checks), a v2 UNSPEC family or protocol, or
	// v1 "UNKNOWN". The caller then uses the connection's own addresses.
	Local bool
	// Src is the client, Dst the address the client connected to. Both
	// are zero when Local. An IPv6 header may carry an IPv4-mapped
	// address; it is returned as sent (callers Unmap before lookups).
	Src, Dst netip.AddrPort
}

// Wire limits from proxy-protocol.txt.
const (
	// maxV1Line: "PROXY UNKNOWN ffff:...:ffff ffff:...:ffff 65535 65535\r\n"
	// is the longest possible v1 line, 107 bytes (section 2.1).
	maxV1Line = 107
	// v2HeaderLen is the fixed part of a v2 header: 12-byte signature,
	// version/command, family/protocol, 2-byte length (section 2.2).
	v2HeaderLen = 16
	// maxV2Header bounds a whole v2 header. Section 2.2 asks senders to
	// keep the header within 536 bytes (the minimum TCP MSS) so it arrives
	// in one segment; that fits the largest address block (UNIX, 216
	// bytes) plus TLVs. A longer header is refused, so a peer cannot make
	// us buffer up to 64 KiB before the first command.
	maxV2Header = 536
)

// v1Sig and v2Sig start every header of their version.
var (
	v1Sig = []byte("PROXY ")
	v2Sig = []byte("\r\n\r\n\x00\r\nQUIT\n")
)

// LooksLikeHeader reports whether prefix is consistent with the start of a
// PROXY header: it is non-empty and its first bytes (at most 6 for v1, 12
// for v2) equal the start of the v1 signature "PROXY " or the v2
// signature. Bytes past the signature are not examined. A caller that
// received a few bytes from an untrusted peer uses it to tell "someone
// sent a PROXY header" from an ordinary client.
func LooksLikeHeader(prefix []byte) bool {
	if len(prefix) == 0 {
		return false
	}
	return isPrefixOf(prefix, v1Sig) || isPrefixOf(prefix, v2Sig)
}

// isPrefixOf reports whether the first min(len(p), len(sig)) bytes of p
// equal the start of sig.
func isPrefixOf(p, sig []byte) bool {
	n := min(len(p), len(sig))
	return bytes.Equal(p[:n], sig[:n])
}

// Read reads exactly one PROXY header from r. Errors from r (EOF,
// deadline) are returned wrapped; everything wrong with the bytes wraps
// ErrMalformed. On error the reader's position is unspecified and the
// connection should be closed.
func Read(r *bufio.Reader) (Header, error) {
	first, err := r.Peek(1)
	if err != nil {
		return Header{}, fmt.Errorf("proxyproto: reading header: %w", err)
	}
	switch first[0] {
	case v1Sig[0]:
		return readV1(r)
	case v2Sig[0]:
		return readV2(r)
	}
	return Header{}, fmt.Errorf("%w: no PROXY signature", ErrMalformed)
}

// readV1 finds the CRLF of a v1 line within maxV1Line bytes, checking
// the signature as bytes arrive so garbage fails at once, then parses it.
func readV1(r *bufio.Reader) (Header, error) {
	n := 0 // bytes inspected so far
	for {
		// Wait for at least one byte more than we have looked at, but
		// never ask for more than the line may be long.
		want := max(n+1, min(r.Buffered(), maxV1Line))
		buf, err := r.Peek(want)
		if err != nil && len(buf) <= n {
			return Header{}, fmt.Errorf("proxyproto: reading v1 header: %w", err)
		}
		if !isPrefixOf(buf, v1Sig) {
			return Header{}, fmt.Errorf("%w: bad v1 signature", ErrMalformed)
		}
		if i := bytes.IndexByte(buf, '\n'); i >= 0 {
			line := buf[:i+1]
			h, perr := parseV1(line)
			if perr != nil {
				return Header{}, perr
			}
			if _, err := r.Discard(len(line)); err != nil {
				return Header{}, fmt.Errorf("proxyproto: %w", err)
			}
			return h, nil
		}
		if len(buf) >= maxV1Line {
			return Header{}, fmt.Errorf("%w: v1 line longer than %d bytes", ErrMalformed, maxV1Line)
		}
		n = len(buf)
	}
}

// parseV1 parses one complete v1 line including its CRLF (section 2.1):
// "PROXY" SP proto SP src SP dst SP srcport SP dstport CRLF, single
// spaces, proto TCP4 or TCP6; "PROXY UNKNOWN" may be followed by anything.
func parseV1(line []byte) (Header, error) {
	body, ok := bytes.CutSuffix(line, []byte("\r\n"))
	if !ok || bytes.IndexByte(body, '\r') >= 0 {
		return Header{}, fmt.Errorf("%w: v1 line must end in CRLF", ErrMalformed)
	}
	rest := body[len(v1Sig):]
	if rest2, ok := bytes.CutPrefix(rest, []byte("UNKNOWN")); ok {
		// The spec lets the sender put addresses after UNKNOWN; the
		// receiver must ignore them.
		if len(rest2) > 0 && rest2[0] != ' ' {
			return Header{}, fmt.Errorf("%w: bad v1 protocol", ErrMalformed)
		}
		return Header{Version: 1, Local: true}, nil
	}
	f := bytes.Split(rest, []byte(" "))
	if len(f) != 5 {
		return Header{}, fmt.Errorf("%w: v1 needs 5 fields, got %d", ErrMalformed, len(f))
	}
	var want4 bool
	switch string(f[0]) {
	case "TCP4":
		want4 = true
	case "TCP6":
	default:
		return Header{}, fmt.Errorf("%w: bad v1 protocol", ErrMalformed)
	}
	src, err := parseV1Addr(f[1], want4)
	if err != nil {
		return Header{}, err
	}
	dst, err := parseV1Addr(f[2], want4)
	if err != nil {
		return Header{}, err
	}
	sp, err := parseV1Port(f[3])
	if err != nil {
		return Header{}, err
	}
	dp, err := parseV1Port(f[4])
	if err != nil {
		return Header{}, err
	}
	return Header{
		Version: 1,
		Src:     netip.AddrPortFrom(src, sp),
		Dst:     netip.AddrPortFrom(dst, dp),
	}, nil
}

// parseV1Addr parses an address of the family the line announced. Zones
// ("fe80::1%eth0") mean nothing to the receiver and are refused.
func parseV1Addr(b []byte, want4 bool) (netip.Addr, error) {
	a, err := netip.ParseAddr(string(b))
	if err != nil || a.Zone() != "" || a.Is4() != want4 {
		return netip.Addr{}, fmt.Errorf("%w: bad v1 address", ErrMalformed)
	}
	return a, nil
}

// parseV1Port parses a decimal port 0..65535 without sign or leading
// zeros, as senders write it.
func parseV1Port(b []byte) (uint16, error) {
	if len(b) == 0 || len(b) > 5 || (len(b) > 1 && b[0] == '0') {
		return 0, fmt.Errorf("%w: bad v1 port", ErrMalformed)
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%w: bad v1 port", ErrMalformed)
		}
	}
	p, err := strconv.ParseUint(string(b), 10, 16)
	if err != nil {
		return 0, fmt.Errorf("%w: bad v1 port", ErrMalformed)
	}
	return uint16(p), nil
}

// v2 field values (section 2.2).
const (
	v2Version    = 0x2
	v2CmdLocal   = 0x0
	v2CmdProxy   = 0x1
	v2FamUnspec  = 0x0
	v2FamInet    = 0x1
	v2FamInet6   = 0x2
	v2FamUnix    = 0x3
	v2ProtUnspec = 0x0
	v2ProtStream = 0x1
	v2ProtDgram  = 0x2
	v2Inet4Len   = 12 // 4+4 addresses, 2+2 ports
	v2Inet6Len   = 36 // 16+16 addresses, 2+2 ports
)

// readV2 reads the fixed 16 bytes, bounds the length, then reads the
// address block and TLVs (which are skipped).
func readV2(r *bufio.Reader) (Header, error) {
	// Check the signature on whatever has arrived before waiting for all
	// 16 bytes, so a client that merely starts with CR fails at once.
	if buf, _ := r.Peek(min(r.Buffered(), len(v2Sig))); !isPrefixOf(buf, v2Sig) {
		return Header{}, fmt.Errorf("%w: bad v2 signature", ErrMalformed)
	}
	fixed, err := r.Peek(v2HeaderLen)
	if err != nil {
		return Header{}, fmt.Errorf("proxyproto: reading v2 header: %w", err)
	}
	if !bytes.Equal(fixed[:len(v2Sig)], v2Sig) {
		return Header{}, fmt.Errorf("%w: bad v2 signature", ErrMalformed)
	}
	ver, cmd := fixed[12]>>4, fixed[12]&0xf
	fam, prot := fixed[13]>>4, fixed[13]&0xf
	n := int(binary.BigEndian.Uint16(fixed[14:16]))
	if ver != v2Version {
		return Header{}, fmt.Errorf("%w: v2 version %d", ErrMalformed, ver)
	}
	if cmd != v2CmdLocal && cmd != v2CmdProxy {
		return Header{}, fmt.Errorf("%w: v2 command %d", ErrMalformed, cmd)
	}
	if fam > v2FamUnix || prot > v2ProtDgram {
		return Header{}, fmt.Errorf("%w: v2 family/protocol %#x", ErrMalformed, fixed[13])
	}
	if v2HeaderLen+n > maxV2Header {
		return Header{}, fmt.Errorf("%w: v2 header of %d bytes exceeds %d", ErrMalformed, v2HeaderLen+n, maxV2Header)
	}
	// The length is bounded, so this Peek is too; with a too-small
	// bufio.Reader it fails with ErrBufferFull rather than growing.
	all, err := r.Peek(v2HeaderLen + n)
	if err != nil {
		return Header{}, fmt.Errorf("proxyproto: reading v2 header: %w", err)
	}
	h, err := parseV2Body(cmd, fam, prot, all[v2HeaderLen:])
	if err != nil {
		return Header{}, err
	}
	if _, err := r.Discard(len(all)); err != nil {
		return Header{}, fmt.Errorf("proxyproto: %w", err)
	}
	return h, nil
}

// parseV2Body decodes the address block. LOCAL, UNSPEC family and UNSPEC
// protocol carry no usable address: the spec tells the receiver to use the
// connection's own. UNIX sockets and datagrams cannot be a mail client's
// TCP connection; they are refused rather than guessed at.
func parseV2Body(cmd, fam, prot byte, body []byte) (Header, error) {
	h := Header{Version: 2}
	if cmd == v2CmdLocal || fam == v2FamUnspec || prot == v2ProtUnspec {
		h.Local = true
		return h, nil
	}
	if prot != v2ProtStream || fam == v2FamUnix {
		return Header{}, fmt.Errorf("%w: v2 family/protocol %#x not supported", ErrMalformed, fam<<4|prot)
	}
	alen := v2Inet4Len
	if fam == v2FamInet6 {
		alen = v2Inet6Len
	}
	if len(body) < alen {
		return Header{}, fmt.Errorf("%w: v2 address block of %d bytes, need %d", ErrMalformed, len(body), alen)
	}
	if err := checkTLVs(body[alen:]); err != nil {
		return Header{}, err
	}
	ip := alen/2 - 2 // bytes per address
	src, _ := netip.AddrFromSlice(body[:ip])
	dst, _ := netip.AddrFromSlice(body[ip : 2*ip])
	ports := body[2*ip:]
	h.Src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(ports[0:2]))
	h.Dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(ports[2:4]))
	return h, nil
}

// checkTLVs walks the TLV list (type, 2-byte length, value) only to make
// sure it is well formed: a length running past the header means the
// sender and we disagree about where the client's bytes begin.
func checkTLVs(b []byte) error {
	for len(b) > 0 {
		if len(b) < 3 {
			return fmt.Errorf("%w: truncated v2 TLV", ErrMalformed)
		}
		n := int(binary.BigEndian.Uint16(b[1:3]))
		if len(b) < 3+n {
			return fmt.Errorf("%w: v2 TLV runs past header", ErrMalformed)
		}
		b = b[3+n:]
	}
	return nil
}
