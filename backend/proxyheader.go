package backend

// PROXY protocol headers to the backend (backends.*.proxy_protocol), for
// servers that take the client's address from a PROXY header (Dovecot's
// haproxy listeners, Postfix's smtpd_upstream_proxy_protocol) rather than
// from IMAP ID or XCLIENT. The header is built from mailgate's own facts
// only: the client address it accepted (after its own PROXY listener, if
// any), the local address, and the TLS state of its own handshake. Nothing
// the client typed reaches it; the SNI name goes in only when it is a
// plain DNS name. Spec: haproxy's proxy-protocol.txt (v1 section 2.1, v2
// section 2.2, TLVs 2.2.7).

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"net/netip"
	"strconv"
)

// ProxyProtocol is the PROXY protocol version a backend takes: "" (none),
// "v1" (text) or "v2" (binary, with TLS and SNI TLVs).
type ProxyProtocol string

// The PROXY protocol versions.
const (
	ProxyNone ProxyProtocol = ""
	ProxyV1   ProxyProtocol = "v1"
	ProxyV2   ProxyProtocol = "v2"
)

// Valid reports whether p is "", "v1" or "v2".
func (p ProxyProtocol) Valid() bool { return p == ProxyNone || p == ProxyV1 || p == ProxyV2 }

// proxyV2Sig is the 12-byte v2 signature (proxy-protocol.txt 2.2).
var proxyV2Sig = []byte("\r\n\r\n\x00\r\nQUIT\n")

// PROXY v2 TLV types and bits (proxy-protocol.txt 2.2.7).
const (
	pp2TypeAuthority     = 0x02
	pp2TypeSSL           = 0x20
	pp2SubtypeSSLVersion = 0x21
	pp2SubtypeSSLCipher  = 0x23
	pp2ClientSSL         = 0x01
)

// proxyHeader returns the header announcing c. A nil c (mailgate's own
// connection: an EHLO or CAPA probe) or one without a valid client address
// is announced as such: "PROXY UNKNOWN" (v1) or the LOCAL command (v2), so
// the backend sees mailgate's own address.
func proxyHeader(p ProxyProtocol, c *Client) ([]byte, error) {
	var src, dst netip.AddrPort
	if c != nil && c.Addr.IsValid() {
		src = netip.AddrPortFrom(c.Addr.Addr().Unmap(), c.Addr.Port())
		dst = c.Local
		if dst.IsValid() {
			dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
		}
		// Unknown local address: announce the unspecified one of the
		// client's family, which no server takes for its own.
		if !dst.IsValid() {
			if src.Addr().Is4() {
				dst = netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
			} else {
				dst = netip.AddrPortFrom(netip.IPv6Unspecified(), 0)
			}
		}
		// One family for both: a v4 address in a v6 header is mapped.
		if src.Addr().Is4() != dst.Addr().Is4() {
			src = netip.AddrPortFrom(netip.AddrFrom16(src.Addr().As16()), src.Port())
			dst = netip.AddrPortFrom(netip.AddrFrom16(dst.Addr().As16()), dst.Port())
		}
		// A zone (fe80::1%eth0) is this host's, not the backend's business.
		src = netip.AddrPortFrom(src.Addr().WithZone(""), src.Port())
		dst = netip.AddrPortFrom(dst.Addr().WithZone(""), dst.Port())
	}
	switch p {
	case ProxyV1:
		return proxyV1(src, dst), nil
	case ProxyV2:
		var tlv []byte
		if c != nil && src.IsValid() {
			tlv = proxyTLVs(c)
		}
		return proxyV2(src, dst, tlv), nil
	}
	return nil, fmt.Errorf("proxy_protocol %q is not one of v1, v2", p)
}

// proxyV1 is the text header (proxy-protocol.txt 2.1).
func proxyV1(src, dst netip.AddrPort) []byte {
	if !src.IsValid() {
		return []byte("PROXY UNKNOWN\r\n")
	}
	fam := "TCP4"
	if !src.Addr().Is4() {
		fam = "TCP6"
	}
	return []byte("PROXY " + fam + " " + src.Addr().String() + " " + dst.Addr().String() + " " +
		strconv.Itoa(int(src.Port())) + " " + strconv.Itoa(int(dst.Port())) + "\r\n")
}

// proxyV2 is the binary header (proxy-protocol.txt 2.2): PROXY over TCP
// with the addresses and tlv, or LOCAL without them.
func proxyV2(src, dst netip.AddrPort, tlv []byte) []byte {
	b := bytes.NewBuffer(make([]byte, 0, 16+36+len(tlv)))
	b.Write(proxyV2Sig)
	if !src.IsValid() {
		b.Write([]byte{0x20, 0x00, 0, 0}) // version 2, LOCAL; AF_UNSPEC; no payload
		return b.Bytes()
	}
	var addrs []byte
	fam := byte(0x11) // AF_INET, STREAM
	if src.Addr().Is4() {
		s, d := src.Addr().As4(), dst.Addr().As4()
		addrs = append(append(addrs, s[:]...), d[:]...)
	} else {
		fam = 0x21 // AF_INET6, STREAM
		s, d := src.Addr().As16(), dst.Addr().As16()
		addrs = append(append(addrs, s[:]...), d[:]...)
	}
	addrs = binary.BigEndian.AppendUint16(addrs, src.Port())
	addrs = binary.BigEndian.AppendUint16(addrs, dst.Port())
	b.Write([]byte{0x21, fam}) // version 2, PROXY
	_ = binary.Write(b, binary.BigEndian, uint16(len(addrs)+len(tlv)))
	b.Write(addrs)
	b.Write(tlv)
	return b.Bytes()
}

// proxyTLVs says how the client reached mailgate: PP2_TYPE_SSL with the
// version and cipher when it used TLS, and PP2_TYPE_AUTHORITY with the
// SNI name when it sent a valid one.
func proxyTLVs(c *Client) []byte {
	var out []byte
	if c.TLS == nil {
		return nil
	}
	if name := c.TLS.ServerName; validSNI(name) {
		out = appendTLV(out, pp2TypeAuthority, []byte(name))
	}
	// client: PP2_CLIENT_SSL only (mailgate asks for no client
	// certificate); verify: non-zero, "no verified certificate".
	ssl := []byte{pp2ClientSSL, 0, 0, 0, 1}
	if v := tlsVersionName(c.TLS.Version); v != "" {
		ssl = appendTLV(ssl, pp2SubtypeSSLVersion, []byte(v))
	}
	if name := tls.CipherSuiteName(c.TLS.CipherSuite); name != "" && c.TLS.CipherSuite != 0 {
		ssl = appendTLV(ssl, pp2SubtypeSSLCipher, []byte(name))
	}
	return appendTLV(out, pp2TypeSSL, ssl)
}

func appendTLV(b []byte, typ byte, v []byte) []byte {
	b = append(b, typ)
	b = binary.BigEndian.AppendUint16(b, uint16(len(v)))
	return append(b, v...)
}

// tlsVersionName names a version as OpenSSL and haproxy do in
// PP2_SUBTYPE_SSL_VERSION ("TLSv1.3").
func tlsVersionName(v uint16) string {
	switch v {
	case tls.VersionTLS10:
		return "TLSv1"
	case tls.VersionTLS11:
		return "TLSv1.1"
	case tls.VersionTLS12:
		return "TLSv1.2"
	case tls.VersionTLS13:
		return "TLSv1.3"
	}
	return ""
}

// validSNI accepts a DNS name of letters, digits, hyphens, underscores
// and dots, at most 253 octets, as the authority TLV may carry; anything
// else the client sent stays out of the header.
func validSNI(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case ch >= 'a' && ch <= 'z', ch >= 'A' && ch <= 'Z', ch >= '0' && ch <= '9', ch == '-', ch == '.', ch == '_':
		default:
			return false
		}
	}
	return true
}
