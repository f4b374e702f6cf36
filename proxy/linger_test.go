package proxy

import (
	"bufio"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// Finding 9 of issue #14: a client that pipelined more than the 16 KiB
// read buffer and is then disconnected must still receive the goodbye.
// Closing with its input unread sends a TCP reset: a client still writing
// gets an error instead of the reply (Python's imaplib raises from
// sendall and never reads). Here the client writes 200 KiB through a
// small send buffer, so its write can only finish if mailgate keeps
// reading after it has given up on the line.
func TestGoodbyeSurvivesPipelinedInput(t *testing.T) {
	e := startServer(t, Listener{}, fastLimits())
	nc, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := nc.(*net.TCPConn).SetWriteBuffer(8 << 10); err != nil {
		t.Fatal(err)
	}
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(nc)
	if g, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(g, "* OK") {
		t.Fatalf("greeting %q, %v", g, err)
	}
	// No line end: the server's line reader gives up at 16 KiB, says
	// goodbye and ends the session with the rest unread.
	if _, err := nc.Write([]byte("a1 LOGIN " + strings.Repeat("x", 200<<10))); err != nil {
		t.Fatalf("writing the pipelined bytes: %v (the server reset the connection)", err)
	}
	rest, err := io.ReadAll(br)
	if !strings.Contains(string(rest), "* BYE Command line too long") {
		t.Errorf("client read %q (err %v), want * BYE Command line too long", rest, err)
	}
}
