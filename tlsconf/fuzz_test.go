package tlsconf

import (
	"bytes"
	"encoding/hex"
	"encoding/pem"
	"os"
	"testing"
)

// FuzzParsePrivateKeyPEM: key files are read from disk on every reload;
// garbage must give an error, never a panic or a hang.
func FuzzParsePrivateKeyPEM(f *testing.F) {
	for _, name := range []string{"key-plain.pem", "key-pkcs8-aes256-sha256.pem", "key-legacy-aes256.pem", "key-pkcs8-3des-pbe.pem"} {
		b, err := os.ReadFile("testdata/" + name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, []byte("correct-horse"))
	}
	f.Fuzz(func(t *testing.T, data, password []byte) {
		k, err := parsePrivateKeyPEM(data, password)
		if (k == nil) == (err == nil) {
			t.Fatalf("parsePrivateKeyPEM = %v, %v: want exactly one of key and error", k, err)
		}
	})
}

// FuzzDecryptPKCS8 goes below PEM, straight at the ASN.1 and padding.
func FuzzDecryptPKCS8(f *testing.F) {
	for _, name := range []string{"key-pkcs8-aes256-sha256.pem", "key-pkcs8-aes128-sha1.pem"} {
		b, err := os.ReadFile("testdata/" + name)
		if err != nil {
			f.Fatal(err)
		}
		blk, _ := pem.Decode(b)
		f.Add(blk.Bytes, []byte("correct-horse"))
	}
	f.Fuzz(func(t *testing.T, der, password []byte) {
		pt, err := decryptPKCS8(der, password)
		if err != nil {
			return
		}
		if _, err := parseKeyDER(pt); err != nil {
			t.Fatalf("decryptPKCS8 returned a plaintext that is not a key: %v", err)
		}
	})
}

// FuzzParseCertChainPEM: certificate files, same rules as keys.
func FuzzParseCertChainPEM(f *testing.F) {
	ca := newTestCA(f)
	f.Add(ca.pem)
	f.Add(append(append([]byte{}, ca.pem...), ca.pem...))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		chain, err := parseCertChainPEM(data)
		if err != nil {
			return
		}
		if len(chain) == 0 {
			t.Fatal("no error and no certificate")
		}
		for _, c := range chain {
			if !bytes.Contains(data, []byte("CERTIFICATE")) || len(c.Raw) == 0 {
				t.Fatalf("certificate from nowhere: %v", c.Subject)
			}
		}
	})
}

// FuzzParsePin: pins come from config; a result is always 32 bytes and
// its hex form parses back to the same digest.
func FuzzParsePin(f *testing.F) {
	f.Add("sha256//47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=")
	f.Add("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
	f.Add("E3:B0:C4:42:98:FC:1C:14:9A:FB:F4:C8:99:6F:B9:24:27:AE:41:E4:64:9B:93:4C:A4:95:99:1B:78:52:B8:55")
	f.Add("47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU")
	f.Fuzz(func(t *testing.T, s string) {
		b, err := ParsePin(s)
		if err != nil {
			return
		}
		if len(b) != 32 {
			t.Fatalf("ParsePin(%q) = %d bytes", s, len(b))
		}
		again, err := ParsePin(hex.EncodeToString(b))
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("ParsePin(hex(ParsePin(%q))) = %x, %v; want %x", s, again, err, b)
		}
	})
}
