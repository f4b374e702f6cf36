package adapter

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// serveForTest serves h on a loopback listener until the test ends.
func serveForTest(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Serve(ctx, ln, h, slog.New(slog.DiscardHandler), time.Second)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return ln.Addr().String()
}

// A caller that sends its headers and then trickles the body is cut off
// after readTimeout: it cannot hold a connection and a handler for long.
func TestServeCutsSlowBodies(t *testing.T) {
	addr := serveForTest(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body)
		io.WriteString(w, "read")
	}))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	if _, err := io.WriteString(c, "POST /?command=allow HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"); err != nil {
		t.Fatal(err)
	}
	// One byte a second, never the whole body; the server must give up
	// within readTimeout (a generous margin for a busy machine).
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		io.Copy(io.Discard, c)
	}()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	limit := time.After(readTimeout + 20*time.Second)
	for {
		select {
		case <-closed:
			if d := time.Since(start); d < readTimeout-time.Second {
				t.Fatalf("cut off after %v, before readTimeout %v", d, readTimeout)
			}
			return
		case <-tick.C:
			c.Write([]byte(" "))
		case <-limit:
			t.Fatalf("a body trickled for %v and the connection is still open", time.Since(start))
		}
	}
}

// Headers past maxHeaderBytes are refused before any handler runs.
func TestServeRefusesHugeHeaders(t *testing.T) {
	called := false
	addr := serveForTest(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { called = true }))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	req := "GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + strings.Repeat("a", 14<<10) + "\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge || called {
		t.Fatalf("14 KiB of headers: %d (handler called: %v), want 431", resp.StatusCode, called)
	}
}

// A reload with the same secret changes nothing; another one is in
// force for the next request, and the old one is refused.
func TestSecretsRotate(t *testing.T) {
	s := NewSecrets("X-Secret", "0123456789abcdef", slog.New(slog.DiscardHandler))
	ask := func(v string) bool {
		r, _ := http.NewRequest("GET", "/", nil)
		r.Header.Set("X-Secret", v)
		return s.Current().OK(r)
	}
	if s.Set("0123456789abcdef") {
		t.Error("the same secret counted as a change")
	}
	if !ask("0123456789abcdef") {
		t.Fatal("the secret is refused")
	}
	if !s.Set("fedcba9876543210") {
		t.Error("a new secret did not count as a change")
	}
	if ask("0123456789abcdef") || !ask("fedcba9876543210") {
		t.Error("after the rotation the old secret still passes or the new one does not")
	}
}
