package main

import (
	"io"
	"net"
	"testing"
	"time"
)

// FuzzServerReplies feeds arbitrary server bytes to each client session
// (login for IMAP, POP3, SMTP, and the APPEND/FETCH transfer): the
// client must return an error or succeed within its deadline, never
// panic, hang or read without bound.
func FuzzServerReplies(f *testing.F) {
	f.Add(uint8(0), []byte("* OK ready\r\nb1 OK logged in\r\n* BYE\r\nb2 OK\r\n"))
	f.Add(uint8(1), []byte("+OK\r\n+OK\r\n+OK\r\n+OK\r\n"))
	f.Add(uint8(2), []byte("220-a\r\n220 b\r\n250-x\r\n250 AUTH PLAIN\r\n235 ok\r\n221 bye\r\n"))
	f.Add(uint8(3), []byte("* OK\r\nb1 OK\r\nb2 OK\r\nb3 OK\r\nb4 OK\r\n+ go\r\nb5 OK\r\nb6 OK\r\n* 1 FETCH (BODY[] {10}\r\n0123456789)\r\nb7 OK\r\n"))
	f.Add(uint8(3), []byte("* OK\r\nb1 OK\r\nb2 OK\r\nb3 OK\r\nb4 OK\r\n+ go\r\nb5 OK\r\nb6 OK\r\n* 1 FETCH (BODY[] {99999999999}\r\n"))
	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		cl, sv := net.Pipe()
		defer cl.Close()
		go func() {
			defer sv.Close()
			go func() { _, _ = io.Copy(io.Discard, sv) }()
			_ = sv.SetWriteDeadline(time.Now().Add(2 * time.Second))
			_, _ = sv.Write(data)
		}()
		c := newConn(cl)
		tg := target{user: "alice@example.test", pass: "alicepass", step: time.Second}
		done := make(chan struct{})
		go func() {
			defer close(done)
			switch which % 4 {
			case 0:
				_ = c.loginLogout("imap", tg)
			case 1:
				_ = c.loginLogout("pop3", tg)
			case 2:
				_ = c.loginLogout("smtp", tg)
			case 3:
				_, _ = c.transfer(tg, []byte("0123456789"))
			}
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("client session did not return within 10s")
		}
	})
}
