package proxy

import (
	"bufio"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/internal/testwait"
)

// TestSMTPFilterRefusesAfterLogin: XCLIENT, XFORWARD, STARTTLS, AUTH and
// BDAT sent after login, in any case, pipelined with the login and split
// across packets, reach the backend only as a verb it refuses; one WARN
// per session names the command and nothing the client chose.
func TestSMTPFilterRefusesAfterLogin(t *testing.T) {
	e := startServer(t, Listener{Protocol: smtpProto}, smtpLimits())
	c := e.dialSMTP()
	c.send("EHLO client.example\r\nAUTH PLAIN " + enc64("\x00alice\x00secret") + "\r\nXCLIENT LOGIN=bob ADDR=203.0.113.50\r\n")
	c.expect("250-mx.test")
	for l := c.line(); strings.HasPrefix(l, "250-"); l = c.line() {
	}
	c.expect("235 2.7.0 Authentication successful")
	c.expect("250 echo MAILGATE-REFUSED-XCLIENT LOGIN=bob ADDR=203.0.113.50")
	for _, piece := range []string{"xcl", "ient NAME=x\r\nXFORWARD ADDR=1.2.3.4\r\n", "starttls\r\n", " AUTH PLAIN x\r\nNOOP\r\n"} {
		c.send(piece)
		time.Sleep(5 * time.Millisecond) // separate packets
	}
	c.expect("250 echo MAILGATE-REFUSED-xclient NAME=x")
	c.expect("250 echo MAILGATE-REFUSED-XFORWARD ADDR=1.2.3.4")
	c.expect("250 echo MAILGATE-REFUSED-starttls")
	c.expect("250 echo  MAILGATE-REFUSED-AUTH PLAIN x")
	c.expect("250 echo NOOP")
	c.send("QUIT\r\n")
	c.expect("250 echo QUIT")
	c.nc.Close()
	testwait.For(t, "session closed", func() bool { return strings.Contains(e.logs.String(), "session closed") })
	logs := e.logs.String()
	if n := strings.Count(logs, `msg="command refused after login"`); n != 1 {
		t.Errorf("%d refused-command WARN lines, want 1:\n%s", n, logs)
	}
	if !strings.Contains(logs, `level=WARN msg="command refused after login" cid=`) || !strings.Contains(logs, "command=XCLIENT") || strings.Contains(logs, "203.0.113.50") {
		t.Errorf("WARN line lacks command=XCLIENT or carries client bytes:\n%s", logs)
	}
}

// scriptSMTPBackend replaces the fake SMTP backend's session with a tiny
// Postfix: 250 to commands, 354 to DATA, 250 after the message's ".";
// every line it reads as a command is sent on cmds.
func scriptSMTPBackend(t *testing.T, e *testEnv) chan string {
	cmds := make(chan string, 100)
	e.smtp.script = func(nc net.Conn) {
		defer nc.Close()
		br := bufio.NewReader(nc)
		inData := false
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimRight(line, "\r\n")
			if inData {
				if line == "." {
					inData = false
					io.WriteString(nc, "250 2.0.0 Ok: queued\r\n")
				}
				continue
			}
			cmds <- line
			switch strings.ToUpper(line) {
			case "DATA":
				inData = true
				io.WriteString(nc, "354 End data with <CR><LF>.<CR><LF>\r\n")
			case "QUIT":
				io.WriteString(nc, "221 2.0.0 Bye\r\n")
				return
			default:
				io.WriteString(nc, "250-first\r\n250 2.0.0 Ok\r\n")
			}
		}
	}
	return cmds
}

// TestSMTPFilterDataContent: after the 354 the message passes untouched,
// XCLIENT lines in it included; after its "." commands are filtered
// again. DATA pipelined with the commands before it and with the
// message (which RFC 2920 forbids, but a client may do) still works:
// the message waits for the 354.
func TestSMTPFilterDataContent(t *testing.T) {
	e := startServer(t, Listener{Protocol: smtpProto}, smtpLimits())
	cmds := scriptSMTPBackend(t, e)
	c := e.dialSMTP()
	c.ehlo("client.example")
	msg := "Subject: t\r\n\r\nXCLIENT LOGIN=bob\r\n..XFORWARD\r\n.\r\n"
	c.send("AUTH PLAIN " + enc64("\x00alice\x00secret") + "\r\nMAIL FROM:<alice@example.org>\r\nRCPT TO:<x@example.net>\r\nDATA\r\n" + msg + "XCLIENT LOGIN=bob\r\nQUIT\r\n")
	c.expect("235 2.7.0")
	c.expect("250-first")
	c.expect("250 2.0.0 Ok")
	c.expect("250-first")
	c.expect("250 2.0.0 Ok")
	c.expect("354 ")
	c.expect("250 2.0.0 Ok: queued")
	c.expect("250-first")
	c.expect("250 2.0.0 Ok")
	c.expect("221 ")
	var got []string
	for range 5 {
		got = append(got, <-cmds)
	}
	want := []string{"MAIL FROM:<alice@example.org>", "RCPT TO:<x@example.net>", "DATA", "MAILGATE-REFUSED-XCLIENT LOGIN=bob", "QUIT"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("backend read commands %q, want %q", got, want)
	}
}

// TestSMTPFilterBackendGarbage: a backend that answers with something
// that is not an SMTP reply ends the session (fail closed).
func TestSMTPFilterBackendGarbage(t *testing.T) {
	e := startServer(t, Listener{Protocol: smtpProto}, smtpLimits())
	e.smtp.script = func(nc net.Conn) {
		defer nc.Close()
		bufio.NewReader(nc).ReadString('\n')
		io.WriteString(nc, "HTTP/1.1 400 Bad Request\r\n")
		time.Sleep(time.Second)
	}
	c := e.dialSMTP()
	c.ehlo("client.example")
	c.send("AUTH PLAIN " + enc64("\x00alice\x00secret") + "\r\nNOOP\r\n")
	c.expect("235 2.7.0")
	c.expectClosed()
	testwait.For(t, "session closed", func() bool { return strings.Contains(e.logs.String(), `reason="backend error"`) })
}

// TestPOP3FilterRefusesXCLIENT: POP3 XCLIENT after login reaches the
// backend only as a verb it refuses.
func TestPOP3FilterRefusesXCLIENT(t *testing.T) {
	e := startServer(t, Listener{Protocol: pop3Proto}, fastLimits())
	c := e.dialPOP3()
	c.send("USER alice\r\nPASS secret\r\nXCLIENT ADDR=203.0.113.50\r\n")
	c.expect("+OK")
	c.expect("+OK Logged in")
	c.expect("+OK echo MAILGATE-REFUSED-XCLIENT ADDR=203.0.113.50")
	c.send("STAT\r\n")
	c.expect("+OK echo STAT")
}

// BenchmarkSMTPFilterSplice: a message's content through a spliced SMTP
// session (compare BenchmarkSpliceThroughput, IMAP without a filter).
func BenchmarkSMTPFilterSplice(b *testing.B) {
	e := startServer(b, Listener{Protocol: smtpProto}, smtpLimits())
	got := make(chan int64, 1)
	e.smtp.script = func(nc net.Conn) {
		defer nc.Close()
		br := bufio.NewReader(nc)
		br.ReadString('\n')
		io.WriteString(nc, "354 go ahead\r\n")
		n, _ := io.Copy(io.Discard, br)
		got <- n
	}
	nc, err := net.Dial("tcp", e.addr)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	io.WriteString(nc, "EHLO x\r\nAUTH PLAIN "+enc64("\x00alice\x00secret")+"\r\nDATA\r\n")
	br := bufio.NewReader(nc)
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			b.Fatal(err)
		}
		if strings.HasPrefix(l, "354") {
			break
		}
	}
	chunk := []byte(strings.Repeat("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do.\r\n", 512))
	b.SetBytes(int64(len(chunk)))
	b.ReportAllocs()
	b.ResetTimer()
	var sent int64
	for b.Loop() {
		n, err := nc.Write(chunk)
		if err != nil {
			b.Fatal(err)
		}
		sent += int64(n)
	}
	nc.(*net.TCPConn).CloseWrite()
	if n := <-got; n != sent {
		b.Fatalf("backend got %d bytes, sent %d", n, sent)
	}
}
