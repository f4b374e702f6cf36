package main

import (
	"net"
	"testing"

	"github.com/mailgate/mailgate/integration/testport"
)

// closedAddr returns a loopback address that refuses connections for the
// rest of the test: a socket bound to it that never listens
// (testport.Refused). A port bound and closed again could be given to
// any port-0 bind meanwhile (another test, another package's process)
// and then accept.
func closedAddr(t *testing.T) string {
	t.Helper()
	a, closeFn, err := testport.Refused()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeFn() })
	return a
}

// TestClosedAddrHeld: nothing else can bind closedAddr's port while the
// test runs, so it keeps refusing.
func TestClosedAddrHeld(t *testing.T) {
	a := closedAddr(t)
	if ln, err := net.Listen("tcp", a); err == nil {
		ln.Close()
		t.Fatalf("%s could be bound by another socket", a)
	}
	if c, err := net.Dial("tcp", a); err == nil {
		c.Close()
		t.Fatalf("%s accepted a connection", a)
	}
}
