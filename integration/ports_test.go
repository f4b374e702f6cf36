//go:build integration

package integration

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/integration/testport"
)

// listening reports whether the mailgate process itself listens on addr
// (procListening).
func (m *Mailgate) listening(addr string) bool { return procListening(m.cmd.Process.Pid, addr) }

// procListening reports whether process pid itself listens on addr
// (testport.Listens): a connection alone could reach another program that
// took the port first, while pid is about to exit on "address already in
// use". Where /proc cannot tell, it falls back to connecting.
func procListening(pid int, addr string) bool {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return false
	}
	if l, known := testport.Listens(pid, port); known {
		return l
	}
	return accepting(addr)
}

// TestHarnessPortsOutsideEphemeral: the ports the harness gives mailgate
// and the daemons lie outside the kernel's ephemeral range, where no
// port-0 bind (of this process, a parallel test package, Pebble's DNS
// server) can take them before the program binds them.
func TestHarnessPortsOutsideEphemeral(t *testing.T) {
	hs := need(t)
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		t.Skip(err)
	}
	var lo, hi int
	if _, err := fmt.Sscan(string(b), &lo, &hi); err != nil {
		t.Fatalf("ip_local_port_range %q: %v", b, err)
	}
	c := newCfg(t)
	ports := map[string]int{
		"dovecot imap": hs.imapPort, "dovecot pop3": hs.pop3Port, "dovecot lmtp": hs.lmtpPort, "dovecot auth": hs.authPort,
		"postfix smtp": hs.smtpPort, "postfix submission": hs.subPort,
		"imaps": c.IMAPS, "imap": c.IMAP, "imaps-lb": c.IMAPSLB, "pop3s": c.POP3S,
		"pop3s-lb": c.POP3SLB, "smtps": c.SMTPS, "smtps-lb": c.SMTPSLB, "submission": c.Submission,
	}
	seen := map[int]string{}
	for name, p := range ports {
		if p >= lo && p <= hi {
			t.Errorf("%s port %d is in the ephemeral range %d-%d", name, p, lo, hi)
		}
		if other, ok := seen[p]; ok {
			t.Errorf("%s and %s share port %d", name, other, p)
		}
		seen[p] = name
	}
}

// TestHarnessLaunchRetriesTakenPort: when mailgate finds its port taken
// (here by a listener of the test's own, which accepts connections), the
// harness neither mistakes that listener for mailgate nor gives up: it
// starts mailgate again on a new port and the test goes on.
func TestHarnessLaunchRetriesTakenPort(t *testing.T) {
	hs := need(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	port := taken.Addr().(*net.TCPAddr).Port
	picks := 0
	render := func() string {
		return fmt.Sprintf(`hostname: mail.example.test
log: {level: debug, format: text}
listeners:
  - {name: imaps, protocol: imap, address: "127.0.0.1:%d", tls: implicit}
backends:
  imap: {address: "127.0.0.1:%d", tls: none, forward_client: true}
tls:
  self_signed: true
geo:
  overrides: {"127.0.0.1/32": GB}
policy:
  allow_countries: [GB]
`, port, hs.imapPort)
	}
	m := launchRetrying(t, render, func() {
		picks++
		ports, err := freePorts(1)
		if err != nil {
			t.Fatal(err)
		}
		port = ports[0]
	})
	if picks != 1 {
		t.Errorf("picked new ports %d times, want once", picks)
	}
	if got, want := m.Addr["imaps"], addr(port); got != want || port == taken.Addr().(*net.TCPAddr).Port {
		t.Errorf("mailgate on %s, want the new port %s", got, want)
	}
	if r := imapLoginRaw(t, "", m.Addr["imaps"], "", "alice@example.test", users["alice@example.test"]); !strings.HasPrefix(r, "a1 OK") {
		t.Errorf("login on the new port = %q", r)
	}
}
