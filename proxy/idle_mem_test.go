package proxy

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
)

// BenchmarkIdleSessionMemory measures what an idle spliced IMAPS session
// keeps alive: each op connects over implicit TLS, logs in, checks one
// relayed round trip and leaves the session idle. After the loop the
// growth of the live heap (and of goroutine stacks) is divided by the
// sessions held. The figure includes the test's own client and fake
// backend sockets (a TLS client conn and an echo goroutine per
// session), so it is an upper bound on mailgate's share. Run with a
// fixed count, e.g. -benchtime=1000x: every op holds four sockets.
func BenchmarkIdleSessionMemory(b *testing.B) {
	e := startServer(b, Listener{TLS: tlsImplicit}, fastLimits())
	e.imap.script = func(nc net.Conn) {
		defer nc.Close()
		buf := make([]byte, 64)
		for {
			n, err := nc.Read(buf)
			if err != nil {
				return
			}
			if _, err := nc.Write(buf[:n]); err != nil {
				return
			}
		}
	}
	tc := &tls.Config{InsecureSkipVerify: true}
	var held []net.Conn
	b.Cleanup(func() {
		for _, c := range held {
			c.Close()
		}
	})
	var before struct{ heap, stack uint64 }
	before.heap, before.stack = liveMemory()
	b.ReportAllocs()
	for b.Loop() {
		nc, err := net.Dial("tcp", e.addr)
		if err != nil {
			b.Fatal(err)
		}
		c := tls.Client(nc, tc)
		held = append(held, c)
		br := bufio.NewReaderSize(c, 256)
		readUntil(b, br, "* OK ")
		io.WriteString(c, "a LOGIN alice secret\r\n")
		readUntil(b, br, "a OK ")
		io.WriteString(c, "b NOOP\r\n") // echoed by the backend: spliced
		readUntil(b, br, "b NOOP")
	}
	heap, stack := liveMemory()
	n := float64(len(held))
	b.ReportMetric((float64(heap)-float64(before.heap))/n, "heap-B/session")
	b.ReportMetric((float64(heap+stack)-float64(before.heap+before.stack))/n, "heap+stack-B/session")
	if got := e.srv.Sessions(); got != len(held) {
		b.Fatalf("%d sessions open, want %d", got, len(held))
	}
}

// liveMemory returns the live heap and goroutine stack bytes after a GC.
func liveMemory() (heap, stack uint64) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc, ms.StackInuse
}

func readUntil(b *testing.B, br *bufio.Reader, prefix string) {
	b.Helper()
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			b.Fatalf("read: %v (got %q)", err, l)
		}
		if strings.HasPrefix(l, prefix) {
			return
		}
	}
}

// Bytes pipelined after LOGIN (still in the pre-login reader) and a
// transfer much larger than the copy buffers arrive in order and intact
// both ways, across the switches between the small and pooled buffers.
func TestSpliceLargeTransferKeepsOrder(t *testing.T) {
	e := startServer(t, Listener{TLS: tlsImplicit}, fastLimits())
	e.imap.script = func(nc net.Conn) {
		defer nc.Close()
		io.Copy(nc, nc) // echo, at whatever pace the sockets give
	}
	nc, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	c := tls.Client(nc, &tls.Config{InsecureSkipVerify: true})
	defer c.Close()
	br := bufio.NewReader(c)
	line := func() string {
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("read: %v (got %q)", err, l)
		}
		return l
	}
	if l := line(); !strings.HasPrefix(l, "* OK ") {
		t.Fatalf("greeting %q", l)
	}
	payload := make([]byte, 3<<20+17)
	for i := range payload {
		payload[i] = byte(i*7 + i>>11)
	}
	errc := make(chan error, 1)
	go func() {
		// The first 200 bytes go with the LOGIN line, so they are read
		// with it and must be forwarded from the pre-login buffer.
		_, err := c.Write(append([]byte("a LOGIN alice secret\r\n"), payload[:200]...))
		if err == nil {
			_, err = c.Write(payload[200:])
		}
		errc <- err
	}()
	if l := line(); !strings.HasPrefix(l, "a OK ") {
		t.Fatalf("login reply %q", l)
	}
	got := make([]byte, len(payload))
	if _, err := io.ReadFull(br, got); err != nil {
		t.Fatalf("echo: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	for i := range got {
		if got[i] != payload[i] {
			t.Fatalf("byte %d: got %#x, want %#x", i, got[i], payload[i])
		}
	}
}
