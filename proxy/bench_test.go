package proxy

import (
	"bufio"
	"io"
	"net"
	"testing"
)

// BenchmarkSpliceThroughput measures client→backend copying through a
// spliced session over loopback (one 32 KiB write per op).
func BenchmarkSpliceThroughput(b *testing.B) {
	e := startServer(b, Listener{}, fastLimits())
	got := make(chan int64, 1)
	e.imap.script = func(nc net.Conn) {
		defer nc.Close()
		n, _ := io.Copy(io.Discard, nc)
		got <- n
	}
	c := e.dialGreeted()
	c.send("a LOGIN alice secret\r\n")
	c.expect("a OK")
	chunk := make([]byte, 32<<10)
	b.SetBytes(int64(len(chunk)))
	b.ReportAllocs()
	b.ResetTimer()
	var sent int64
	for b.Loop() {
		n, err := c.nc.Write(chunk)
		if err != nil {
			b.Fatal(err)
		}
		sent += int64(n)
	}
	c.nc.(*net.TCPConn).CloseWrite()
	if n := <-got; n != sent {
		b.Fatalf("backend got %d bytes, sent %d", n, sent)
	}
}

// BenchmarkLogin measures a whole session: connect, greeting, LOGIN
// (policy, fake backend), splice setup, LOGOUT through the backend.
func BenchmarkLogin(b *testing.B) {
	e := startServer(b, Listener{}, fastLimits())
	b.ReportAllocs()
	for b.Loop() {
		nc, err := net.Dial("tcp", e.addr)
		if err != nil {
			b.Fatal(err)
		}
		br := bufio.NewReader(nc)
		br.ReadString('\n')
		io.WriteString(nc, "a LOGIN alice secret\r\nb LOGOUT\r\n")
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				b.Fatalf("read: %v", err)
			}
			if l == "* BYE bye\r\n" {
				break
			}
		}
		nc.Close()
		<-e.imap.lines // b LOGOUT
	}
}

// BenchmarkPreAuthCommands measures the pre-auth command loop: one
// pipelined batch of CAPABILITY/NOOP/ID per op on one connection.
func BenchmarkPreAuthCommands(b *testing.B) {
	lim := fastLimits()
	lim.MaxCommands = 1 << 30
	e := startServer(b, Listener{}, lim)
	c := e.dialGreeted()
	b.ReportAllocs()
	for b.Loop() {
		c.send("a NOOP\r\nb ID (\"name\" \"bench\")\r\nc CAPABILITY\r\n")
		for range 5 {
			c.line()
		}
	}
}
