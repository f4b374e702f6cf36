//go:build integration

package integration

import (
	"strings"
	"testing"
)

// lingerScript: a Python client on IMAPS with a small send buffer writes
// one 200 KiB command line (over mailgate's 8 KiB IMAP line limit and its
// 16 KiB read buffer) with sendall, then reads until mailgate closes.
const lingerScript = `
import socket, ssl, sys
host, port = sys.argv[1], int(sys.argv[2])
raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
raw.connect((host, port))
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s = ctx.wrap_socket(raw, server_hostname="mail.example.test")
s.recv(4096)  # greeting
s.sendall(b"a1 LOGIN " + b"x" * (200 * 1024))
got = b""
while True:
    b = s.recv(4096)
    if not b:
        break
    got += b
sys.stdout.write(got.decode())
`

// TestGoodbyeAfterPipelinedLineReachesPython (issue #14 finding 9): the
// client's sendall completes and it reads mailgate's goodbye; without the
// lingering close mailgate's reset made sendall fail.
func TestGoodbyeAfterPipelinedLineReachesPython(t *testing.T) {
	m := startCfg(t, newCfg(t))
	host, port, _ := strings.Cut(m.Addr["imaps"], ":")
	out, err := python(t, lingerScript, host, port)
	if err != nil || !strings.Contains(out, "* BYE Command line too long") {
		t.Fatalf("python client: %v\n%s", err, out)
	}
}
