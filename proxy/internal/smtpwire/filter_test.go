package smtpwire

import (
	"bytes"
	"strings"
	"testing"
)

// runFilter feeds in to a new SMTP filter in pieces of the given sizes
// (cycled; 0 means all at once), answering each DATA line with
// answer(line). It returns the output and the refused verbs.
func runFilter(in []byte, sizes []int, answer func(line []byte) int) ([]byte, []string) {
	f := NewFilter(SMTPRefusedAfterLogin, true)
	var refused []string
	f.OnRefuse = func(v string) { refused = append(refused, v) }
	var out []byte
	k := 0
	for len(in) > 0 {
		n := len(in)
		if len(sizes) > 0 && sizes[k%len(sizes)] > 0 {
			n = min(n, sizes[k%len(sizes)])
		}
		k++
		chunk := in[:n]
		in = in[n:]
		for len(chunk) > 0 {
			var used int
			out, used = f.Client(out, chunk)
			chunk = chunk[used:]
			if _, ok := f.Waiting(); ok {
				line := out[bytes.LastIndexByte(out[:len(out)-1], '\n')+1:]
				f.Resume(answer(line))
			}
		}
	}
	return f.Flush(out), refused
}

// codesAnswer answers the k-th DATA with codes[k], 354 after the list.
func codesAnswer(codes []int) func([]byte) int {
	k := 0
	return func([]byte) int {
		k++
		if k <= len(codes) {
			return codes[k-1]
		}
		return 354
	}
}

func TestFilterRewrites(t *testing.T) {
	tests := []struct {
		name, in, want string
		codes          []int
		refused        []string
	}{
		{"plain", "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n", "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n", nil, nil},
		{"xclient", "XCLIENT LOGIN=bob ADDR=203.0.113.50\r\n", "MAILGATE-REFUSED-XCLIENT LOGIN=bob ADDR=203.0.113.50\r\n", nil, []string{"XCLIENT"}},
		{"lower and leading space", " \txclient login=bob\r\n", " \tMAILGATE-REFUSED-xclient login=bob\r\n", nil, []string{"XCLIENT"}},
		{"xforward pipelined with mail", "XFORWARD NAME=x\r\nMAIL FROM:<bob@x>\r\n", "MAILGATE-REFUSED-XFORWARD NAME=x\r\nMAIL FROM:<bob@x>\r\n", nil, []string{"XFORWARD"}},
		{"bare LF", "RSET\nXCLIENT A=b\n", "RSET\nMAILGATE-REFUSED-XCLIENT A=b\n", nil, []string{"XCLIENT"}},
		{"starttls auth bdat", "STARTTLS\r\nAUTH PLAIN x\r\nBDAT 5 LAST\r\n", "MAILGATE-REFUSED-STARTTLS\r\nMAILGATE-REFUSED-AUTH PLAIN x\r\nMAILGATE-REFUSED-BDAT 5 LAST\r\n", nil, []string{"STARTTLS", "AUTH", "BDAT"}},
		{"not a verb: longer", "XCLIENTS a\r\nXCLIENTXX\r\n", "XCLIENTS a\r\nXCLIENTXX\r\n", nil, nil},
		{"verb then NUL", "XCLIENT\x00x\r\n", "MAILGATE-REFUSED-XCLIENT\x00x\r\n", nil, []string{"XCLIENT"}},
		{"not at line start", "NOOP XCLIENT\r\n", "NOOP XCLIENT\r\n", nil, nil},
		{"data content untouched", "DATA\r\nXCLIENT LOGIN=bob\r\n..XFORWARD\r\n.\r\nXCLIENT x\r\n",
			"DATA\r\nXCLIENT LOGIN=bob\r\n..XFORWARD\r\n.\r\nMAILGATE-REFUSED-XCLIENT x\r\n", nil, []string{"XCLIENT"}},
		{"data refused", "DATA\r\nXCLIENT LOGIN=bob\r\n", "DATA\r\nMAILGATE-REFUSED-XCLIENT LOGIN=bob\r\n", []int{503}, []string{"XCLIENT"}},
		{"dot with bare LF ends", "data\r\nx\r\n.\nXCLIENT\r\n", "data\r\nx\r\n.\nMAILGATE-REFUSED-XCLIENT\r\n", nil, []string{"XCLIENT"}},
		{"dot CR CR LF ends", "DATA\r\n.\r\r\nXCLIENT\r\n", "DATA\r\n.\r\r\nMAILGATE-REFUSED-XCLIENT\r\n", nil, []string{"XCLIENT"}},
		{"dot text does not end", "DATA\r\n.x\r\nXCLIENT\r\n", "DATA\r\n.x\r\nXCLIENT\r\n", nil, nil},
		{"empty message", "DATA\r\n.\r\nDATA\r\nXCLIENT\r\n.\r\n", "DATA\r\n.\r\nDATA\r\nXCLIENT\r\n.\r\n", nil, nil},
		{"DATA with argument waits too", "DATA x\r\nXCLIENT\r\n", "DATA x\r\nMAILGATE-REFUSED-XCLIENT\r\n", []int{501}, []string{"XCLIENT"}},
	}
	for _, tt := range tests {
		for _, sizes := range [][]int{nil, {1}, {2}, {3, 7}, {5}} {
			got, refused := runFilter([]byte(tt.in), sizes, codesAnswer(tt.codes))
			if string(got) != tt.want || strings.Join(refused, ",") != strings.Join(tt.refused, ",") {
				t.Errorf("%s, pieces %v: got %q refused %v, want %q refused %v", tt.name, sizes, got, refused, tt.want, tt.refused)
			}
		}
	}
}

func TestFilterWaitsAfterData(t *testing.T) {
	f := NewFilter(SMTPRefusedAfterLogin, true)
	in := []byte("MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nSubject: x\r\n")
	out, n := f.Client(nil, in)
	if string(out) != "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n" || n != len(out) {
		t.Fatalf("Client = %q, %d; want up to DATA", out, n)
	}
	if r, ok := f.Waiting(); !ok || r != 3 {
		t.Fatalf("Waiting = %d, %v; want reply 3", r, ok)
	}
	// Held until Resume.
	if out2, n2 := f.Client(nil, in[n:]); n2 != 0 || len(out2) != 0 {
		t.Fatalf("Client while waiting = %q, %d; want nothing", out2, n2)
	}
	f.Resume(354)
	if out3, n3 := f.Client(nil, in[n:]); string(out3) != "Subject: x\r\n" || n3 != len(in)-n {
		t.Fatalf("after Resume: %q, %d", out3, n3)
	}
	// The message's end is answered too: the next DATA is reply 5
	// (MAIL, RCPT, DATA, end of data, MAIL... here RSET).
	f.Client(nil, []byte(".\r\nRSET\r\nDATA\r\n"))
	if r, ok := f.Waiting(); !ok || r != 6 {
		t.Fatalf("second DATA waits for reply %d, %v; want 6", r, ok)
	}
}

func TestFilterPOP3(t *testing.T) {
	f := NewFilter(POP3RefusedAfterLogin, false)
	out, n := f.Client(nil, []byte("STAT\r\nxclient ADDR=203.0.113.50\r\nDATA\r\nRETR 1\r\n"))
	if string(out) != "STAT\r\nMAILGATE-REFUSED-xclient ADDR=203.0.113.50\r\nDATA\r\nRETR 1\r\n" || n != 47 {
		t.Fatalf("POP3 filter: %q, %d", out, n)
	}
	if _, ok := f.Waiting(); ok {
		t.Fatal("POP3 filter waits after DATA")
	}
}

func TestReplies(t *testing.T) {
	in := "250-mx.example\r\n250-PIPELINING\r\n250 8BITMIME\r\n354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok: queued\n221\r\n"
	for _, step := range []int{len(in), 1, 2, 5} {
		var r Replies
		var got []int
		var nums []uint64
		for i := 0; i < len(in); i += step {
			if err := r.Feed([]byte(in[i:min(i+step, len(in))]), func(n uint64, code int) {
				nums = append(nums, n)
				got = append(got, code)
			}); err != nil {
				t.Fatalf("step %d: %v", step, err)
			}
		}
		if len(got) != 4 || got[0] != 250 || got[1] != 354 || got[2] != 250 || got[3] != 221 || nums[3] != 4 {
			t.Fatalf("step %d: replies %v %v", step, got, nums)
		}
	}
	for _, bad := range []string{"hello\r\n", "25x ok\r\n", "250xok\r\n", "650 x\r\n", "250 ok\r\n\r\n", "+OK\r\n"} {
		var r Replies
		if err := r.Feed([]byte(bad), nil); err == nil {
			t.Errorf("Feed(%q) = nil, want ErrBadReply", bad)
		}
	}
}

// postfixToken is the first token of a command line as Postfix reads
// it: after leading white space, up to white space or NUL.
func postfixToken(body []byte) (tok, rest []byte) {
	tok = bytes.TrimLeft(body, " \t\r\v\f")
	if i := bytes.IndexAny(tok, " \t\r\v\f\x00"); i >= 0 {
		return tok[:i], tok[i:]
	}
	return tok, nil
}

// backendModel answers DATA lines as Postfix would: 354 only to a bare
// DATA, unless refuse says the transaction is not ready (bit k for the
// k-th bare DATA); 501 or 502 otherwise.
func backendModel(refuse uint8) func([]byte) int {
	k := 0
	return func(line []byte) int {
		body := bytes.TrimRight(bytes.TrimSuffix(line, []byte("\n")), "\r")
		tok, rest := postfixToken(body)
		if !strings.EqualFold(string(tok), "DATA") || len(bytes.Trim(rest, " \t\r\v\f")) > 0 {
			return 501
		}
		k++
		if refuse&(1<<((k-1)%8)) != 0 {
			return 503
		}
		return 354
	}
}

// postfixCommands lists the first token of every line a Postfix-like
// reader takes as a command in out, with DATA answered by answer.
func postfixCommands(out []byte, answer func([]byte) int) []string {
	var cmds []string
	content := false
	for _, l := range bytes.SplitAfter(out, []byte("\n")) {
		if !bytes.HasSuffix(l, []byte("\n")) {
			break // an unfinished line is not read yet
		}
		body := bytes.TrimRight(bytes.TrimSuffix(l, []byte("\n")), "\r")
		if content {
			if string(body) == "." {
				content = false
			}
			continue
		}
		tok, _ := postfixToken(body)
		cmds = append(cmds, strings.ToUpper(string(tok)))
		if strings.EqualFold(string(tok), "DATA") {
			content = answer(l) == 354
		}
	}
	return cmds
}

// FuzzSMTPFilter: however the stream is cut into reads, the output is the
// same; it is the input with "MAILGATE-REFUSED-" put before some verbs;
// and a Postfix-like reader of the output never sees a refused command.
func FuzzSMTPFilter(f *testing.F) {
	seeds := []string{
		"XCLI\x00ENT LOGIN=bob\r\n",
		"MAIL FROM:<bob@example.test>\r\nRCPT TO:<x@example.test>\r\nXCLIENT LOGIN=bob\r\nDATA\r\n",
		"DATA\r\nSubject: x\r\n\r\n..XCLIENT\r\n.\r\nxforward addr=1.2.3.4\r\n",
		"BDAT 10 LAST\r\n0123456789XCLIENT LOGIN=bob\r\n",
		"  xClient NAME=x\nQUIT\n",
	}
	for _, s := range seeds {
		f.Add([]byte(s), uint8(3), uint8(0))
	}
	f.Fuzz(func(t *testing.T, in []byte, cut uint8, refuse uint8) {
		whole, _ := runFilter(in, nil, backendModel(refuse))
		pieces, _ := runFilter(in, []int{int(cut%17) + 1, 1}, backendModel(refuse))
		if !bytes.Equal(whole, pieces) {
			t.Fatalf("cut into reads: %q, whole: %q", pieces, whole)
		}
		if back := bytes.ReplaceAll(whole, []byte(RefusedPrefix), nil); !bytes.Equal(back, bytes.ReplaceAll(in, []byte(RefusedPrefix), nil)) {
			t.Fatalf("output %q is not the input %q with prefixes", whole, in)
		}
		for _, c := range postfixCommands(whole, backendModel(refuse)) {
			for _, r := range SMTPRefusedAfterLogin {
				if c == r {
					t.Fatalf("a reader of %q sees %s", whole, c)
				}
			}
		}
	})
}

// BenchmarkSMTPFilterContent: message content (the bulk of a session)
// through the filter, 32 KiB per op as the splice reads it.
func BenchmarkSMTPFilterContent(b *testing.B) {
	f := NewFilter(SMTPRefusedAfterLogin, true)
	f.Client(nil, []byte("DATA\r\n"))
	f.Resume(354)
	chunk := []byte(strings.Repeat("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do.\r\n", 512))
	out := make([]byte, 0, 2*len(chunk))
	b.SetBytes(int64(len(chunk)))
	b.ReportAllocs()
	for b.Loop() {
		out, _ = f.Client(out[:0], chunk)
	}
}

// BenchmarkSMTPFilterCommands: pipelined command lines (RFC 2920).
func BenchmarkSMTPFilterCommands(b *testing.B) {
	f := NewFilter(SMTPRefusedAfterLogin, true)
	chunk := []byte(strings.Repeat("RCPT TO:<someone@example.org> NOTIFY=NEVER\r\n", 100))
	out := make([]byte, 0, 2*len(chunk))
	b.SetBytes(int64(len(chunk)))
	b.ReportAllocs()
	for b.Loop() {
		out, _ = f.Client(out[:0], chunk)
	}
}
