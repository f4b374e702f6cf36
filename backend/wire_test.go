package backend

import (
	"bufio"
	"bytes"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestXtext(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"alice@example.test", "alice@example.test"},
		{"a+b", "a+2Bb"},
		{"a=b", "a+3Db"},
		{"sp ace", "sp+20ace"},
		{"cr\r\nlf", "cr+0D+0Alf"},
		{"nul\x00", "nul+00"},
		{"ü", "+C3+BC"},
		{"[UNAVAILABLE]", "[UNAVAILABLE]"},
		{"~!", "~!"},
		{"\x7f", "+7F"},
	}
	for _, tt := range tests {
		if got := xtext(tt.in); got != tt.want {
			t.Errorf("xtext(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestParseReplyLine(t *testing.T) {
	tests := []struct {
		in   string
		code int
		more bool
		text string
		ok   bool
	}{
		{"250 OK\r\n", 250, false, "OK", true},
		{"250-SIZE 1000\r\n", 250, true, "SIZE 1000", true},
		{"220\r\n", 220, false, "", true},
		{"535 5.7.8 Error: authentication failed", 535, false, "5.7.8 Error: authentication failed", true},
		{"454 4.7.0 Temporary\n", 454, false, "4.7.0 Temporary", true},
		{"25\r\n", 0, false, "", false},
		{"2500 x", 0, false, "", false},
		{"abc def", 0, false, "", false},
		{"150 old", 0, false, "", false},
		{"650 bad", 0, false, "", false},
		{"", 0, false, "", false},
	}
	for _, tt := range tests {
		code, more, text, ok := parseReplyLine([]byte(tt.in))
		if code != tt.code || more != tt.more || text != tt.text || ok != tt.ok {
			t.Errorf("parseReplyLine(%q) = %d, %v, %q, %v; want %d, %v, %q, %v", tt.in, code, more, text, ok, tt.code, tt.more, tt.text, tt.ok)
		}
	}
}

func TestEhloKeywords(t *testing.T) {
	r := smtpReply{code: 250, lines: []string{"mx.example.test", "PIPELINING", "size 10240000", "XCLIENT NAME ADDR PORT", "8BITMIME", ""}}
	got := ehloKeywords(r)
	want := []string{"PIPELINING", "SIZE 10240000", "XCLIENT NAME ADDR PORT", "8BITMIME"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("ehloKeywords = %q, want %q", got, want)
	}
	if p, ok := extParams(got, "XCLIENT"); !ok || strings.Join(p, " ") != "NAME ADDR PORT" {
		t.Errorf("extParams(XCLIENT) = %q, %v", p, ok)
	}
	if _, ok := extParams(got, "AUTH"); ok {
		t.Errorf("extParams(AUTH) found in %q", got)
	}
}

func TestParseResp(t *testing.T) {
	tests := []struct {
		in   string
		ok   bool
		want imapResp
	}{
		{"* OK [CAPABILITY IMAP4rev1 ID] Dovecot ready.\r\n", true, imapResp{kind: respUntagged, status: "OK", code: "CAPABILITY", args: "IMAP4rev1 ID", text: "Dovecot ready."}},
		{"a1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n", true, imapResp{kind: respTagged, tag: "a1", status: "NO", code: "AUTHENTICATIONFAILED", text: "Authentication failed."}},
		{"a1 ok done", true, imapResp{kind: respTagged, tag: "a1", status: "OK", text: "done"}},
		{"* CAPABILITY IMAP4rev1 SASL-IR\r\n", true, imapResp{kind: respUntagged, data: "CAPABILITY", text: "IMAP4rev1 SASL-IR"}},
		{"* BYE shutting down", true, imapResp{kind: respUntagged, status: "BYE", text: "shutting down"}},
		{"+ go ahead", true, imapResp{kind: respContinuation, text: "go ahead"}},
		{"+", true, imapResp{kind: respContinuation}},
		{"a1 BYE nonsense", false, imapResp{}},
		{"a1 FETCH x", false, imapResp{}},
		{"a+1 OK x", false, imapResp{}},
		{"* OK [CAPABILITY unterminated", false, imapResp{}},
		{"garbage", false, imapResp{}},
		{"", false, imapResp{}},
	}
	for _, tt := range tests {
		got, ok := parseResp([]byte(tt.in))
		if ok != tt.ok || (ok && got != tt.want) {
			t.Errorf("parseResp(%q) = %+v, %v; want %+v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestLiteralLen(t *testing.T) {
	for in, want := range map[string]int{"* ID (\"name\" {7}\r\n": 7, "{0}\r\n": 0, "x {12}": 12} {
		if n, ok := literalLen([]byte(in)); !ok || n != want {
			t.Errorf("literalLen(%q) = %d, %v; want %d", in, n, ok, want)
		}
	}
	for _, in := range []string{"* OK done\r\n", "{}\r\n", "{-1}", "{99999999999}", "{5+}"} {
		if _, ok := literalLen([]byte(in)); ok {
			t.Errorf("literalLen(%q) ok, want not a literal", in)
		}
	}
}

// TestCmdBuilder checks the wire form of each string kind.
func TestCmdBuilder(t *testing.T) {
	tests := []struct {
		s           string
		plus, minus bool
		want        []string
	}{
		{"alice", false, false, []string{`"alice"` + "\r\n"}},
		{`a"b\c`, false, false, []string{`"a\"b\\c"` + "\r\n"}},
		{"ü", false, false, []string{"{2}\r\n", "ü\r\n"}},
		{"ü", true, false, []string{"{2+}\r\nü\r\n"}},
		{"ü", false, true, []string{"{2+}\r\nü\r\n"}},
		{strings.Repeat("ü", 2049), false, true, []string{"{4098}\r\n", strings.Repeat("ü", 2049) + "\r\n"}},
		{"tab\t", false, false, []string{"{4}\r\n", "tab\t\r\n"}},
	}
	for _, tt := range tests {
		b := cmdBuilder{litPlus: tt.plus, litMinus: tt.minus}
		b.str(tt.s)
		var got []string
		for _, c := range b.done() {
			got = append(got, string(c))
		}
		if strings.Join(got, "|") != strings.Join(tt.want, "|") {
			t.Errorf("str(%q, plus=%v, minus=%v) = %q, want %q", tt.s, tt.plus, tt.minus, got, tt.want)
		}
	}
}

// decodeBuilt decodes the chunks of a command built with cmdBuilder the
// way a server would (continuations granted).
func decodeBuilt(chunks [][]byte) ([]string, error) {
	return imapArgs(bufio.NewReader(bytes.NewReader(bytes.Join(chunks, nil))), func() {})
}

func TestVerifyCache(t *testing.T) {
	c := newVerifyCache(time.Minute)
	now := time.Unix(1000, 0)
	c.now = func() time.Time { return now }
	if c.ok("alice", "pw") {
		t.Fatal("empty cache hit")
	}
	c.add("alice", "pw")
	if !c.ok("alice", "pw") {
		t.Error("miss right after add")
	}
	for _, other := range [][2]string{{"alice", "pw2"}, {"alice2", "pw"}, {"alicep", "w"}, {"alice\x00p", "w"}} {
		if c.ok(other[0], other[1]) {
			t.Errorf("hit for %q", other)
		}
	}
	now = now.Add(time.Minute)
	if c.ok("alice", "pw") {
		t.Error("hit after TTL")
	}
	// Bounded: the oldest entries go first.
	for i := range maxCacheEntries + 10 {
		c.add("user"+strconv.Itoa(i), "pw")
	}
	if n := c.len(); n > maxCacheEntries {
		t.Errorf("cache holds %d entries, limit %d", n, maxCacheEntries)
	}
	if c.ok("user0", "pw") {
		t.Error("oldest entry survived eviction")
	}
	if !c.ok("user"+strconv.Itoa(maxCacheEntries+9), "pw") {
		t.Error("newest entry missing")
	}
	// Adding the same credentials again keeps one entry.
	c.add("again", "pw")
	c.add("again", "pw")
	if !c.ok("again", "pw") {
		t.Error("re-added entry missing")
	}
	// Disabled cache never hits.
	d := newVerifyCache(0)
	d.add("alice", "pw")
	if d.ok("alice", "pw") {
		t.Error("TTL 0 cache hit")
	}
	var nilCache *verifyCache
	if nilCache.ok("a", "b") {
		t.Error("nil cache hit")
	}
}

func TestOptionsValidate(t *testing.T) {
	good := Options{Address: "127.0.0.1:143"}
	if err := good.Validate("backends.imap"); err != nil {
		t.Errorf("Validate(%+v) = %v", good, err)
	}
	tests := []struct {
		o    Options
		want []string
	}{
		{Options{Address: "localhost"}, []string{"backends.imap.address:"}},
		{Options{Address: ":143"}, []string{"backends.imap.address:"}},
		{Options{Address: "h:0"}, []string{"backends.imap.address:"}},
		{Options{Address: "h:99999"}, []string{"backends.imap.address:"}},
		{Options{Address: "h:143", TLS: "ssl"}, []string{"backends.imap.tls:"}},
		{Options{Address: "h:143", ConnectTimeout: -1, Timeout: -1}, []string{"backends.imap.connect_timeout:", "backends.imap.timeout:"}},
		{Options{Address: "", TLS: "x"}, []string{"backends.imap.address:", "backends.imap.tls:"}},
	}
	for _, tt := range tests {
		err := tt.o.Validate("backends.imap")
		if err == nil {
			t.Errorf("Validate(%+v) = nil, want errors %q", tt.o, tt.want)
			continue
		}
		lines := strings.Split(err.Error(), "\n")
		if len(lines) != len(tt.want) {
			t.Errorf("Validate(%+v) = %q, want %d errors", tt.o, lines, len(tt.want))
			continue
		}
		for i, w := range tt.want {
			if !strings.HasPrefix(lines[i], w) {
				t.Errorf("Validate(%+v) error %q, want prefix %q", tt.o, lines[i], w)
			}
		}
	}
	var o Options
	o.Defaults()
	if o.TLS != TLSNone || o.ConnectTimeout != DefaultConnectTimeout || o.Timeout != DefaultTimeout || o.Logger == nil {
		t.Errorf("Defaults() = %+v", o)
	}
}
