package testport

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// ephemeral reports whether p is in this machine's ephemeral range.
func ephemeral(p int) bool {
	lo, hi := ephemeralRange()
	return p >= lo && p <= hi
}

func TestParseRange(t *testing.T) {
	for _, tc := range []struct {
		in     string
		lo, hi int
	}{
		{"32768\t60999\n", 32768, 60999},
		{"1024 65535", 1024, 65535},
		{"", defaultEphemeralLo, defaultEphemeralHi},
		{"40000", defaultEphemeralLo, defaultEphemeralHi},
		{"5 4", defaultEphemeralLo, defaultEphemeralHi},
		{"0 100", defaultEphemeralLo, defaultEphemeralHi},
		{"1000 70000", defaultEphemeralLo, defaultEphemeralHi},
		{"a b", defaultEphemeralLo, defaultEphemeralHi},
	} {
		if lo, hi := parseRange(tc.in); lo != tc.lo || hi != tc.hi {
			t.Errorf("parseRange(%q) = %d, %d; want %d, %d", tc.in, lo, hi, tc.lo, tc.hi)
		}
	}
}

func FuzzParseRange(f *testing.F) {
	f.Add("32768\t60999\n")
	f.Add("1024 65535")
	f.Add("-1 99999999999999999999")
	f.Fuzz(func(t *testing.T, s string) {
		lo, hi := parseRange(s)
		if lo < 1 || hi > 65535 || lo > hi {
			t.Fatalf("parseRange(%q) = %d, %d: not a port range", s, lo, hi)
		}
		for _, sp := range outside(lo, hi) {
			if sp.lo < minPort || sp.hi > 65535 || sp.lo > sp.hi || sp.hi >= lo && sp.lo <= hi {
				t.Fatalf("outside(%d, %d) has %v", lo, hi, sp)
			}
		}
	})
}

func TestOutside(t *testing.T) {
	for _, tc := range []struct {
		lo, hi int
		want   []span
	}{
		{32768, 60999, []span{{minPort, 32767}, {61000, 65535}}},
		{1024, 65535, nil},
		{1024, 20000, []span{{20001, 65535}}},
		{40000, 65535, []span{{minPort, 39999}}},
		{minPort, 65534, []span{{65535, 65535}}},
	} {
		if got := outside(tc.lo, tc.hi); fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("outside(%d, %d) = %v, want %v", tc.lo, tc.hi, got, tc.want)
		}
	}
}

// TestTakeOutsideEphemeral: ports are distinct over calls, never in the
// ephemeral range (where port-0 binds could take them), and free.
func TestTakeOutsideEphemeral(t *testing.T) {
	seen := map[int]bool{}
	for range 10 {
		ports, err := Take(9)
		if err != nil {
			t.Fatal(err)
		}
		if len(ports) != 9 {
			t.Fatalf("Take(9) = %v", ports)
		}
		for _, p := range ports {
			if seen[p] {
				t.Errorf("port %d handed out twice", p)
			}
			seen[p] = true
			if ephemeral(p) || p < minPort || p > 65535 {
				t.Errorf("port %d is in the ephemeral range or out of bounds", p)
			}
			l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
			if err != nil {
				t.Errorf("port %d not free: %v", p, err)
				continue
			}
			l.Close()
		}
	}
}

// portZeroLoad binds port 0 over TCP and UDP in a loop, keeping the last
// keep sockets of each open, until the test ends: what parallel test
// processes do all the time.
func portZeroLoad(t *testing.T, workers, keep int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	for range workers {
		wg.Go(func() {
			var open []func() error
			defer func() {
				for _, c := range open {
					c()
				}
			}()
			for ctx.Err() == nil {
				if l, err := net.Listen("tcp", "127.0.0.1:0"); err == nil {
					open = append(open, l.Close)
				}
				if pc, err := net.ListenPacket("udp", "127.0.0.1:0"); err == nil {
					open = append(open, pc.Close)
				}
				for len(open) > keep {
					open[0]()
					open = open[1:]
				}
			}
		})
	}
}

// TestTakeUnderPortZeroLoad: while other sockets bind port 0 in a loop,
// every port Take hands out can still be bound a moment later, as a
// daemon started on it would.
func TestTakeUnderPortZeroLoad(t *testing.T) {
	portZeroLoad(t, 2, 200)
	n := 300
	if testing.Short() {
		n = 50
	}
	for i := range n {
		ports, err := Take(2)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond) // the daemon starting up
		for _, p := range ports {
			l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
			if err != nil {
				t.Fatalf("pick %d: port %d taken between Take and its use: %v", i, p, err)
			}
			l.Close()
		}
	}
}

// TestOtherProcessExcluded: ports another test process was handed out
// are neither handed out here nor claimable while that process lives.
func TestOtherProcessExcluded(t *testing.T) {
	if os.Getenv("TESTPORT_CHILD") != "" {
		ports, err := Take(20)
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(2)
		}
		fmt.Println(strings.Trim(fmt.Sprint(ports), "[]"))
		// Hold the ports until the parent closes stdin.
		bufio.NewReader(os.Stdin).ReadString('\n')
		os.Exit(0)
	}
	if alloc.lock == nil {
		Take(1) // opens the lock file
	}
	if alloc.lock == nil {
		t.Skip("the lock file cannot be opened here")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestOtherProcessExcluded$")
	cmd.Env = append(os.Environ(), "TESTPORT_CHILD=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer stdin.Close()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || strings.HasPrefix(line, "error") {
		t.Fatalf("child: %q, %v", line, err)
	}
	theirs := map[int]bool{}
	for _, f := range strings.Fields(line) {
		p, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("child printed %q", line)
		}
		theirs[p] = true
		if err := Claim(p); err == nil {
			t.Errorf("claimed port %d, which the other process holds", p)
		}
	}
	if len(theirs) != 20 {
		t.Fatalf("child printed %q", line)
	}
	// Start where the child started: its ports are the next candidates.
	alloc.mu.Lock()
	for i := range alloc.size {
		if theirs[alloc.port(i)] {
			alloc.next = i
			break
		}
	}
	alloc.mu.Unlock()
	mine, err := Take(20)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range mine {
		if theirs[p] {
			t.Errorf("port %d handed out here and to the other process", p)
		}
	}
}

func TestClaim(t *testing.T) {
	lo, _ := ephemeralRange()
	if err := Claim(lo); err == nil {
		t.Errorf("claimed %d, in the ephemeral range", lo)
	}
	if err := Claim(minPort - 1); err == nil {
		t.Errorf("claimed %d, below %d", minPort-1, minPort)
	}
	ports, err := Take(1)
	if err != nil {
		t.Fatal(err)
	}
	if err := Claim(ports[0]); err == nil {
		t.Errorf("claimed %d, handed out by Take", ports[0])
	}
	// A held port makes the whole claim fail, and leaves the others
	// available.
	var p int
	for p = ports[0] + 1; alloc.inSpans(p) && alloc.given[p]; p++ {
	}
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p+1)))
	if err != nil {
		t.Skipf("port %d: %v", p+1, err)
	}
	defer l.Close()
	if err := Claim(p, p+1); err == nil {
		t.Errorf("claimed %d and %d while %d is bound", p, p+1, p+1)
	}
	if err := Claim(p); err != nil {
		t.Errorf("claim %d after the failed pair: %v", p, err)
	}
}

func TestRefused(t *testing.T) {
	addr, closeFn, err := Refused()
	if err != nil {
		t.Fatal(err)
	}
	if c, err := net.DialTimeout("tcp", addr, 2*time.Second); err == nil {
		c.Close()
		t.Fatalf("dial %s succeeded", addr)
	}
	if l, err := net.Listen("tcp", addr); err == nil {
		l.Close()
		t.Fatalf("%s could be bound while Refused holds it", addr)
	}
	if err := closeFn(); err != nil {
		t.Fatal(err)
	}
}

func TestInUse(t *testing.T) {
	for s, want := range map[string]bool{
		"listener imaps: listen tcp 127.0.0.1:4000: bind: address already in use": true,
		"Fatal: bind(127.0.0.1, 40001) failed: Address already in use":            true,
		"fatal: bind 127.0.0.1 port 4000: Address already in use":                 true,
		"connection refused": false,
	} {
		if InUse(s) != want {
			t.Errorf("InUse(%q) = %v", s, !want)
		}
	}
	if InUse(errors.New("x").Error()) {
		t.Error("InUse of an unrelated error")
	}
}

func TestListens(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	listens, known := Listens(os.Getpid(), port)
	if !known {
		t.Skip("/proc cannot tell here")
	}
	if !listens {
		t.Errorf("Listens(self, %d) = false for our own listener", port)
	}
	// Another process does not hold it.
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	if l, _ := Listens(cmd.Process.Pid, port); l {
		t.Errorf("Listens(sleep, %d) = true", port)
	}
	// A refusing (bound, not listening) port is not listened on.
	a, closeFn, err := Refused()
	if err != nil {
		t.Fatal(err)
	}
	defer closeFn()
	_, rp, _ := net.SplitHostPort(a)
	p, _ := strconv.Atoi(rp)
	if l, _ := Listens(os.Getpid(), p); l {
		t.Errorf("Listens(self, %d) = true for a socket that does not listen", p)
	}
}

func TestListenInodes(t *testing.T) {
	table := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:AA05 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 847094 1 00000000cc4ddf8e 100 0 0 10 0
   1: 0100007F:AA05 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 847095 1 00000000cc4ddf8e 100 0 0 10 0
   2: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1082 1 00000000bf0fbbb6 100 0 0 10 0
   0: 00000000000000000000000001000000:AA05 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 999 1
`
	if got := fmt.Sprint(listenInodes(table, 0xAA05)); got != "[847094 999]" {
		t.Errorf("listenInodes(0xAA05) = %s, want the two listening sockets", got)
	}
	if got := listenInodes(table, 2024); len(got) != 1 || got[0] != "1082" {
		t.Errorf("listenInodes(2024) = %v", got)
	}
	if got := listenInodes(table, 1); got != nil {
		t.Errorf("listenInodes(1) = %v", got)
	}
}

func FuzzListenInodes(f *testing.F) {
	f.Add("   0: 0100007F:AA05 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 847094 1\n", 0xAA05)
	f.Add("sl local_address rem_address st\n", 0)
	f.Fuzz(func(t *testing.T, table string, port int) {
		for _, ino := range listenInodes(table, port) {
			if !strings.Contains(table, ino) {
				t.Fatalf("inode %q not in the table", ino)
			}
		}
	})
}
