package backend

import (
	"bytes"
	"crypto/tls"
	"encoding/hex"
	"net/netip"
	"strings"
	"testing"
)

func TestProxyHeaderV1(t *testing.T) {
	c := testClient
	for _, tc := range []struct {
		c    *Client
		want string
	}{
		{&c, "PROXY TCP4 81.2.69.142 192.0.2.10 40001 993\r\n"},
		{&Client{Addr: netip.MustParseAddrPort("[2001:db8::1]:5"), Local: netip.MustParseAddrPort("192.0.2.10:993")},
			"PROXY TCP6 2001:db8::1 ::ffff:192.0.2.10 5 993\r\n"},
		{&Client{Addr: netip.MustParseAddrPort("[::ffff:81.2.69.142]:5")}, "PROXY TCP4 81.2.69.142 0.0.0.0 5 0\r\n"},
		{nil, "PROXY UNKNOWN\r\n"},
	} {
		got, err := proxyHeader(ProxyV1, tc.c)
		if err != nil || string(got) != tc.want {
			t.Errorf("%+v: %q, %v; want %q", tc.c, got, err, tc.want)
		}
	}
}

func TestProxyHeaderV2(t *testing.T) {
	c := testClient
	c.TLS = &tls.ConnectionState{Version: tls.VersionTLS13, CipherSuite: tls.TLS_AES_128_GCM_SHA256, ServerName: "mail.example.com"}
	got, err := proxyHeader(ProxyV2, &c)
	if err != nil {
		t.Fatal(err)
	}
	want := "0d0a0d0a000d0a515549540a" + "2111" + "004a" + // sig, v2 PROXY TCP4, length 12+19+43
		"5102458e" + "c000020a" + "9c41" + "03e1" + // 81.2.69.142 192.0.2.10 40001 993
		"020010" + hex.EncodeToString([]byte("mail.example.com")) + // authority
		"200028" + "0100000001" + "210007" + hex.EncodeToString([]byte("TLSv1.3")) +
		"230016" + hex.EncodeToString([]byte("TLS_AES_128_GCM_SHA256"))
	if hex.EncodeToString(got) != want {
		t.Fatalf("got  %x\nwant %s", got, want)
	}
	// A client-sent SNI that is not a plain DNS name stays out.
	c.TLS.ServerName = "a\r\nb"
	got, _ = proxyHeader(ProxyV2, &c)
	if bytes.Contains(got, []byte("a\r\nb")) || bytes.Contains(got, []byte{pp2TypeAuthority, 0, 4}) {
		t.Fatalf("unchecked SNI in %x", got)
	}
	// Plaintext client: no TLVs; mailgate's own connection: LOCAL.
	c.TLS = nil
	if got, _ := proxyHeader(ProxyV2, &c); len(got) != 16+12 {
		t.Fatalf("plaintext header %x", got)
	}
	if got, _ := proxyHeader(ProxyV2, nil); hex.EncodeToString(got) != "0d0a0d0a000d0a515549540a"+"20000000" {
		t.Fatalf("LOCAL header %x", got)
	}
	if _, err := proxyHeader("v3", &c); err == nil || !strings.Contains(err.Error(), "v3") {
		t.Fatalf("v3: %v", err)
	}
}

func TestOptionsValidateProxyProtocol(t *testing.T) {
	o := Options{Address: "127.0.0.1:143", ProxyProtocol: "v3"}
	if err := o.Validate("backends.imap"); err == nil || !strings.Contains(err.Error(), "proxy_protocol") {
		t.Fatalf("v3: %v", err)
	}
	o = Options{Address: "127.0.0.1:143", ProxyProtocol: ProxyV2, ForwardClient: true}
	if err := o.Validate("backends.imap"); err != nil {
		t.Fatal(err)
	}
}
