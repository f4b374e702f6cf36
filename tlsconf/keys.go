package tlsconf

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/pbkdf2"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"hash"
)

// Limits on encrypted keys, so a hostile or corrupt key file cannot make
// start-up or a reload spin.
const (
	// maxPBKDF2Iterations: openssl defaults to 2048, current guidance
	// (OWASP 2023) is 600000 for SHA-256; ten million bounds a reload to a
	// few seconds of CPU.
	maxPBKDF2Iterations = 10_000_000
)

// Sentinel errors of key decoding.
var (
	// ErrKeyPassword: the key is encrypted and no or a wrong password was
	// given.
	ErrKeyPassword = errors.New("tlsconf: wrong or missing key password")
	// ErrKeyFormat: the file holds no private key mailgate can read.
	ErrKeyFormat = errors.New("tlsconf: unsupported private key")
)

// Object identifiers of PKCS#5 v2.1 (RFC 8018) and the ciphers it uses.
var (
	oidPBES2      = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 13}
	oidPBKDF2     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 12}
	oidHMACSHA1   = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 7}
	oidHMACSHA256 = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 9}
	oidHMACSHA512 = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 11}
	oidAES128CBC  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 2}
	oidAES192CBC  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 22}
	oidAES256CBC  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42}
)

// encryptedPrivateKeyInfo is RFC 5958 section 3.
type encryptedPrivateKeyInfo struct {
	Algo          pkix.AlgorithmIdentifier
	EncryptedData []byte
}

// pbes2Params is RFC 8018 A.4.
type pbes2Params struct {
	KDF    pkix.AlgorithmIdentifier
	Scheme pkix.AlgorithmIdentifier
}

// pbkdf2Params is RFC 8018 A.2; the optional keyLength is rarely written
// and we derive the length from the cipher instead.
type pbkdf2Params struct {
	Salt       []byte
	Iterations int
	KeyLength  int                      `asn1:"optional"`
	PRF        pkix.AlgorithmIdentifier `asn1:"optional"`
}

// parsePrivateKeyPEM returns the first private key in data. Encrypted keys
// need password: legacy RFC 1423 PEM encryption ("Proc-Type: 4,ENCRYPTED",
// from `openssl ... -traditional`) and PKCS#8 "ENCRYPTED PRIVATE KEY" with
// PBES2 (PBKDF2 with HMAC-SHA1/256/512, AES-CBC), which is what OpenSSL 1.1
// and later write by default. Older PKCS#12-style PBE schemes are refused.
func parsePrivateKeyPEM(data, password []byte) (crypto.Signer, error) {
	for len(data) > 0 {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		switch {
		case b.Type == "ENCRYPTED PRIVATE KEY":
			if len(password) == 0 {
				return nil, fmt.Errorf("%w: key is encrypted (PKCS#8); set key_password_file", ErrKeyPassword)
			}
			der, err := decryptPKCS8(b.Bytes, password)
			if err != nil {
				return nil, err
			}
			return parseKeyDER(der)
		case b.Type == "PRIVATE KEY" || b.Type == "RSA PRIVATE KEY" || b.Type == "EC PRIVATE KEY":
			der := b.Bytes
			//lint:ignore SA1019 RFC 1423 encryption is weak but still what `openssl -traditional` and many old setups produce; we only read it.
			if x509.IsEncryptedPEMBlock(b) {
				if len(password) == 0 {
					return nil, fmt.Errorf("%w: key is encrypted; set key_password_file", ErrKeyPassword)
				}
				var err error
				//lint:ignore SA1019 see above: reading legacy encrypted keys is the point.
				der, err = x509.DecryptPEMBlock(b, password)
				if err != nil {
					return nil, fmt.Errorf("%w: %v", ErrKeyPassword, err)
				}
			}
			return parseKeyDER(der)
		}
	}
	return nil, fmt.Errorf("%w: no PEM private key block found", ErrKeyFormat)
}

// parseKeyDER tries PKCS#8, PKCS#1 and SEC 1 in turn.
func parseKeyDER(der []byte) (crypto.Signer, error) {
	if k, err := x509.ParsePKCS8PrivateKey(der); err == nil {
		switch k := k.(type) {
		case *rsa.PrivateKey, *ecdsa.PrivateKey, ed25519.PrivateKey:
			return k.(crypto.Signer), nil
		}
		return nil, fmt.Errorf("%w: key type %T", ErrKeyFormat, k)
	}
	if k, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return k, nil
	}
	if k, err := x509.ParseECPrivateKey(der); err == nil {
		return k, nil
	}
	return nil, fmt.Errorf("%w: not PKCS#8, PKCS#1 or SEC 1 DER", ErrKeyFormat)
}

// decryptPKCS8 decrypts an EncryptedPrivateKeyInfo protected with PBES2.
func decryptPKCS8(der, password []byte) ([]byte, error) {
	var info encryptedPrivateKeyInfo
	if rest, err := asn1.Unmarshal(der, &info); err != nil || len(rest) != 0 {
		return nil, fmt.Errorf("%w: malformed encrypted PKCS#8", ErrKeyFormat)
	}
	if !info.Algo.Algorithm.Equal(oidPBES2) {
		return nil, fmt.Errorf("%w: PKCS#8 encryption %v is not PBES2; re-encrypt with `openssl pkcs8 -topk8 -v2 aes-256-cbc`", ErrKeyFormat, info.Algo.Algorithm)
	}
	var params pbes2Params
	if rest, err := asn1.Unmarshal(info.Algo.Parameters.FullBytes, &params); err != nil || len(rest) != 0 {
		return nil, fmt.Errorf("%w: malformed PBES2 parameters", ErrKeyFormat)
	}
	if !params.KDF.Algorithm.Equal(oidPBKDF2) {
		return nil, fmt.Errorf("%w: key derivation %v is not PBKDF2", ErrKeyFormat, params.KDF.Algorithm)
	}
	var kdf pbkdf2Params
	if rest, err := asn1.Unmarshal(params.KDF.Parameters.FullBytes, &kdf); err != nil || len(rest) != 0 {
		return nil, fmt.Errorf("%w: malformed PBKDF2 parameters", ErrKeyFormat)
	}
	if kdf.Iterations < 1 || kdf.Iterations > maxPBKDF2Iterations {
		return nil, fmt.Errorf("%w: PBKDF2 iteration count %d outside 1..%d", ErrKeyFormat, kdf.Iterations, maxPBKDF2Iterations)
	}
	var prf func() hash.Hash
	switch alg := kdf.PRF.Algorithm; {
	case len(alg) == 0 || alg.Equal(oidHMACSHA1): // RFC 8018 A.2: SHA-1 is the default
		prf = sha1.New
	case alg.Equal(oidHMACSHA256):
		prf = sha256.New
	case alg.Equal(oidHMACSHA512):
		prf = sha512.New
	default:
		return nil, fmt.Errorf("%w: PBKDF2 PRF %v", ErrKeyFormat, alg)
	}
	var keyLen int
	switch alg := params.Scheme.Algorithm; {
	case alg.Equal(oidAES128CBC):
		keyLen = 16
	case alg.Equal(oidAES192CBC):
		keyLen = 24
	case alg.Equal(oidAES256CBC):
		keyLen = 32
	default:
		return nil, fmt.Errorf("%w: cipher %v (want AES-CBC)", ErrKeyFormat, alg)
	}
	if kdf.KeyLength != 0 && kdf.KeyLength != keyLen {
		return nil, fmt.Errorf("%w: PBKDF2 key length %d does not fit the cipher", ErrKeyFormat, kdf.KeyLength)
	}
	var iv []byte
	if rest, err := asn1.Unmarshal(params.Scheme.Parameters.FullBytes, &iv); err != nil || len(rest) != 0 || len(iv) != aes.BlockSize {
		return nil, fmt.Errorf("%w: malformed AES-CBC IV", ErrKeyFormat)
	}
	ct := info.EncryptedData
	if len(ct) == 0 || len(ct)%aes.BlockSize != 0 {
		return nil, fmt.Errorf("%w: encrypted key length %d is not a multiple of the block size", ErrKeyFormat, len(ct))
	}
	key, err := pbkdf2.Key(prf, string(password), kdf.Salt, kdf.Iterations, keyLen)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKeyFormat, err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKeyFormat, err)
	}
	pt := make([]byte, len(ct))
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(pt, ct)
	// PKCS#7 padding (RFC 8018 6.2.1); a bad pad almost always means a
	// wrong password, as does a plaintext that is not a key.
	pad := int(pt[len(pt)-1])
	if pad < 1 || pad > aes.BlockSize || pad > len(pt) {
		return nil, ErrKeyPassword
	}
	for _, p := range pt[len(pt)-pad:] {
		if int(p) != pad {
			return nil, ErrKeyPassword
		}
	}
	pt = pt[:len(pt)-pad]
	if _, err := x509.ParsePKCS8PrivateKey(pt); err != nil {
		return nil, ErrKeyPassword
	}
	return pt, nil
}
