package sasl

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestNewServer(t *testing.T) {
	for _, m := range []string{"PLAIN", "plain", "Login", "LOGIN"} {
		if s, err := NewServer(m); err != nil || s == nil {
			t.Errorf("NewServer(%q) = %v, %v", m, s, err)
		}
	}
	for _, m := range []string{"", "CRAM-MD5", "XOAUTH2", "PLAIN ", "SCRAM-SHA-256"} {
		if _, err := NewServer(m); !errors.Is(err, ErrUnsupported) {
			t.Errorf("NewServer(%q) error = %v, want ErrUnsupported", m, err)
		}
	}
}

func TestPlain(t *testing.T) {
	long := strings.Repeat("u", MaxUsername)
	longPass := strings.Repeat("p", MaxPassword)
	tests := []struct {
		msg     string
		want    Credentials
		wantErr bool
	}{
		{"\x00alice\x00secret", Credentials{Username: "alice", Password: "secret"}, false},
		{"alice\x00alice\x00secret", Credentials{Authzid: "alice", Username: "alice", Password: "secret"}, false},
		{"\x00jürgen@例え.jp\x00pässwörd", Credentials{Username: "jürgen@例え.jp", Password: "pässwörd"}, false},
		{"\x00" + long + "\x00" + longPass, Credentials{Username: long, Password: longPass}, false},
		{"\x00a\x00pass with spaces ", Credentials{Username: "a", Password: "pass with spaces "}, false},
		{"bob\x00alice\x00secret", Credentials{}, true},  // acting as another user
		{"\x00\x00secret", Credentials{}, true},          // empty user
		{"\x00alice\x00", Credentials{}, true},           // empty password
		{"alice\x00secret", Credentials{}, true},         // one NUL
		{"\x00alice\x00sec\x00ret", Credentials{}, true}, // three NULs
		{"", Credentials{}, true}, // empty message
		{"\x00alice\x00sec\r\nA1 DELETE x", Credentials{}, true},
		{"\x00alice\r\nA1 LOGOUT\x00secret", Credentials{}, true},
		{"\x00alice\nx\x00secret", Credentials{}, true},
		{"\x00al\xffice\x00secret", Credentials{}, true},     // not UTF-8
		{"\x00alice\x00se\xc3", Credentials{}, true},         // not UTF-8
		{"\x00" + long + "u\x00secret", Credentials{}, true}, // user too long
		{"\x00alice\x00" + longPass + "p", Credentials{}, true},
	}
	for _, tt := range tests {
		s, _ := NewServer("PLAIN")
		ch, done, err := s.Next([]byte(tt.msg))
		if tt.wantErr {
			if !errors.Is(err, ErrMalformed) || done {
				t.Errorf("PLAIN Next(%q) = %q, %v, %v; want ErrMalformed", tt.msg, ch, done, err)
			}
			continue
		}
		if err != nil || !done || ch != nil {
			t.Errorf("PLAIN Next(%q) = %q, %v, %v; want done", tt.msg, ch, done, err)
			continue
		}
		if got := s.Credentials(); got != tt.want {
			t.Errorf("PLAIN Next(%q) credentials %+v, want %+v", tt.msg, got, tt.want)
		}
	}
}

func TestPlainNoInitialResponse(t *testing.T) {
	s, _ := NewServer("PLAIN")
	ch, done, err := s.Next(nil)
	if err != nil || done || ch == nil || len(ch) != 0 {
		t.Fatalf("Next(nil) = %q, %v, %v; want empty challenge", ch, done, err)
	}
	if _, done, err = s.Next([]byte("\x00alice\x00secret")); err != nil || !done {
		t.Fatalf("second Next = %v, %v", done, err)
	}
	if s.Credentials().Username != "alice" {
		t.Errorf("user %q", s.Credentials().Username)
	}
	if _, _, err = s.Next([]byte("\x00alice\x00secret")); !errors.Is(err, ErrMalformed) {
		t.Errorf("Next after done = %v, want ErrMalformed", err)
	}
}

// An empty initial response ("AUTH PLAIN =") is a PLAIN message that is
// empty, not a request for a challenge.
func TestPlainEmptyInitialResponse(t *testing.T) {
	s, _ := NewServer("PLAIN")
	if _, done, err := s.Next([]byte{}); !errors.Is(err, ErrMalformed) || done {
		t.Errorf("Next(empty) = %v, %v; want ErrMalformed", done, err)
	}
	// Empty response after the empty challenge: also malformed.
	s, _ = NewServer("PLAIN")
	s.Next(nil)
	if _, _, err := s.Next(nil); !errors.Is(err, ErrMalformed) {
		t.Errorf("Next(nil) twice = %v, want ErrMalformed", err)
	}
}

func TestLogin(t *testing.T) {
	s, _ := NewServer("LOGIN")
	ch, done, err := s.Next(nil)
	if err != nil || done || string(ch) != "Username:" {
		t.Fatalf("Next(nil) = %q, %v, %v", ch, done, err)
	}
	ch, done, err = s.Next([]byte("alice"))
	if err != nil || done || string(ch) != "Password:" {
		t.Fatalf("Next(user) = %q, %v, %v", ch, done, err)
	}
	ch, done, err = s.Next([]byte("s3cret"))
	if err != nil || !done || ch != nil {
		t.Fatalf("Next(pass) = %q, %v, %v", ch, done, err)
	}
	if got, want := s.Credentials(), (Credentials{Username: "alice", Password: "s3cret"}); got != want {
		t.Errorf("credentials %+v, want %+v", got, want)
	}
	if _, _, err := s.Next([]byte("x")); !errors.Is(err, ErrMalformed) {
		t.Errorf("Next after done = %v, want ErrMalformed", err)
	}
}

func TestLoginInitialResponse(t *testing.T) {
	s, _ := NewServer("LOGIN")
	ch, done, err := s.Next([]byte("alice"))
	if err != nil || done || string(ch) != "Password:" {
		t.Fatalf("Next(initial user) = %q, %v, %v", ch, done, err)
	}
	if _, done, err = s.Next([]byte("pw")); err != nil || !done {
		t.Fatalf("Next(pass) = %v, %v", done, err)
	}
	if got := s.Credentials(); got.Username != "alice" || got.Password != "pw" || got.Authzid != "" {
		t.Errorf("credentials %+v", got)
	}
}

func TestLoginRejects(t *testing.T) {
	tests := []struct {
		name       string
		user, pass []byte
	}{
		{"empty user", []byte{}, []byte("pw")},
		{"empty password", []byte("alice"), []byte{}},
		{"nil password", []byte("alice"), nil},
		{"CRLF in user", []byte("alice\r\nA1 DELETE INBOX"), []byte("pw")},
		{"LF in user", []byte("alice\nx"), []byte("pw")},
		{"NUL in user", []byte("alice\x00bob"), []byte("pw")},
		{"CR in password", []byte("alice"), []byte("pw\rQUIT")},
		{"NUL in password", []byte("alice"), []byte("pw\x00")},
		{"non-UTF-8 user", []byte("al\xe9ice"), []byte("pw")},
		{"long user", bytes.Repeat([]byte("u"), MaxUsername+1), []byte("pw")},
		{"long password", []byte("alice"), bytes.Repeat([]byte("p"), MaxPassword+1)},
	}
	for _, tt := range tests {
		s, _ := NewServer("LOGIN")
		s.Next(nil)
		_, _, err := s.Next(tt.user)
		if err == nil {
			_, _, err = s.Next(tt.pass)
		}
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: error %v, want ErrMalformed", tt.name, err)
		}
		if _, _, err := s.Next([]byte("pw")); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: exchange continued after an error: %v", tt.name, err)
		}
	}
	// Legacy clients send their local charset; LOGIN passwords need not
	// be UTF-8.
	s, _ := NewServer("LOGIN")
	s.Next([]byte("alice"))
	if _, done, err := s.Next([]byte("p\xe4ss")); err != nil || !done {
		t.Errorf("latin-1 password: %v, %v", done, err)
	}
}

func TestDecodeResponse(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr error
	}{
		{"AGFsaWNlAHNlY3JldA==", "\x00alice\x00secret", nil},
		{"YWxpY2U=", "alice", nil},
		{"YQ==", "a", nil},
		{"=", "", nil},
		{"", "", nil},
		{"*", "", ErrCancelled},
		{"YWxpY2U", "", ErrMalformed},    // missing padding
		{"YWxpY2U=\r", "", ErrMalformed}, // stray CR
		{"YWxp\r\nY2U=", "", ErrMalformed},
		{"YWxp Y2U=", "", ErrMalformed},
		{" YWxpY2U=", "", ErrMalformed},
		{"YWxpY2U=\t", "", ErrMalformed},
		{"YWxpY2U=YQ==", "", ErrMalformed}, // padding inside
		{"YR==", "", ErrMalformed},         // non-zero trailing bits (Strict)
		{"YWxp-2U=", "", ErrMalformed},     // URL alphabet
		{"**", "", ErrMalformed},
		{"==", "", ErrMalformed},
		{"é", "", ErrMalformed},
	}
	for _, tt := range tests {
		got, err := DecodeResponse([]byte(tt.in))
		if tt.wantErr != nil {
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("DecodeResponse(%q) = %q, %v; want %v", tt.in, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || string(got) != tt.want || got == nil {
			t.Errorf("DecodeResponse(%q) = %q (nil %v), %v; want %q", tt.in, got, got == nil, err, tt.want)
		}
	}
}

func TestEncodeChallenge(t *testing.T) {
	for in, want := range map[string]string{"": "", "Username:": "VXNlcm5hbWU6", "Password:": "UGFzc3dvcmQ6"} {
		if got := EncodeChallenge([]byte(in)); got != want {
			t.Errorf("EncodeChallenge(%q) = %q, want %q", in, got, want)
		}
	}
	if EncodeChallenge(nil) != "" {
		t.Error("EncodeChallenge(nil) not empty")
	}
}

// checkCreds is the invariant every successful exchange must satisfy.
func checkCreds(t *testing.T, c Credentials) {
	t.Helper()
	for _, f := range []string{c.Authzid, c.Username, c.Password} {
		if strings.ContainsAny(f, "\x00\r\n") {
			t.Fatalf("forbidden byte in %+v", c)
		}
	}
	if c.Username == "" || c.Password == "" || len(c.Username) > MaxUsername || len(c.Password) > MaxPassword ||
		len(c.Authzid) > MaxUsername || !utf8.ValidString(c.Username) {
		t.Fatalf("credentials out of bounds: %q", c.Username)
	}
	if c.Authzid != "" && c.Authzid != c.Username {
		t.Fatalf("authzid %q for %q", c.Authzid, c.Username)
	}
}

func FuzzPlain(f *testing.F) {
	f.Add([]byte("\x00alice\x00secret"))
	f.Add([]byte("alice\x00alice\x00secret"))
	f.Add([]byte("\x00alice\r\n\x00x"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		s, _ := NewServer("PLAIN")
		_, done, err := s.Next(msg)
		if err != nil {
			if !errors.Is(err, ErrMalformed) || done {
				t.Fatalf("error %v done %v", err, done)
			}
			return
		}
		if !done {
			t.Fatal("PLAIN with a message not done")
		}
		c := s.Credentials()
		checkCreds(t, c)
		// Round trip: re-encoding the credentials gives the message back.
		if got := c.Authzid + "\x00" + c.Username + "\x00" + c.Password; got != string(msg) {
			t.Fatalf("re-encoded %q, want %q", got, msg)
		}
	})
}

func FuzzLogin(f *testing.F) {
	f.Add([]byte("alice"), []byte("secret"), false)
	f.Add([]byte("alice"), []byte("secret"), true)
	f.Add([]byte("a\r\nb"), []byte(""), false)
	f.Fuzz(func(t *testing.T, user, pass []byte, initial bool) {
		s, _ := NewServer("LOGIN")
		if !initial {
			if ch, done, err := s.Next(nil); string(ch) != "Username:" || done || err != nil {
				t.Fatalf("start: %q %v %v", ch, done, err)
			}
		}
		ch, done, err := s.Next(user)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatal(err)
			}
			return
		}
		if string(ch) != "Password:" || done {
			t.Fatalf("after user: %q %v", ch, done)
		}
		_, done, err = s.Next(pass)
		if err != nil {
			if !errors.Is(err, ErrMalformed) || done {
				t.Fatal(err)
			}
			return
		}
		c := s.Credentials()
		checkCreds(t, c)
		if c.Username != string(user) || c.Password != string(pass) {
			t.Fatalf("credentials %q/%q from %q/%q", c.Username, c.Password, user, pass)
		}
	})
}

func FuzzDecodeResponse(f *testing.F) {
	f.Add([]byte("AGFsaWNlAHNlY3JldA=="))
	f.Add([]byte("="))
	f.Add([]byte("*"))
	f.Add([]byte("YWxp\nY2U="))
	f.Fuzz(func(t *testing.T, line []byte) {
		out, err := DecodeResponse(line)
		if err != nil {
			if out != nil {
				t.Fatalf("output %q with error %v", out, err)
			}
			return
		}
		if out == nil {
			t.Fatal("nil output without error")
		}
		// Round trip: our decoding is exactly standard base64.
		want := string(line)
		if want == "=" {
			want = ""
		}
		if got := base64.StdEncoding.EncodeToString(out); got != want {
			t.Fatalf("DecodeResponse(%q) = %q, re-encodes to %q", line, out, got)
		}
	})
}

func BenchmarkPlain(b *testing.B) {
	line := []byte("AGFsaWNlQGV4YW1wbGUub3JnAGNvcnJlY3QgaG9yc2UgYmF0dGVyeSBzdGFwbGU=")
	b.ReportAllocs()
	for b.Loop() {
		msg, err := DecodeResponse(line)
		if err != nil {
			b.Fatal(err)
		}
		s, _ := NewServer("PLAIN")
		if _, done, err := s.Next(msg); !done || err != nil {
			b.Fatal(err)
		}
	}
}
