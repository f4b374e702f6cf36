package audit

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// crashChildEnv names the database the re-executed test binary writes
// until it is killed.
const crashChildEnv = "MAILGATE_AUDIT_CRASH_CHILD"

// TestMain runs the crash child when the environment asks for it.
func TestMain(m *testing.M) {
	if path := os.Getenv(crashChildEnv); path != "" {
		crashChild(path)
		return
	}
	os.Exit(m.Run())
}

// crashChild writes decisions as fast as it can and prints the running
// total of committed decisions after each batch, until killed.
func crashChild(path string) {
	total := 0
	s, err := Open(Config{Path: path, BatchRows: 500, BatchInterval: time.Millisecond, Queue: 100000},
		Options{afterBatch: func(n int) {
			total += n
			fmt.Printf("committed %d\n", total)
		}})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	now := time.Now()
	for i := 0; ; i++ {
		// Passes of many accounts from many addresses: new rows, no caps.
		s.Record(ev(fmt.Sprintf("user%d", i%5000), fmt.Sprintf("10.%d.%d.%d", i%7, i/256%256, i%256), ResultPass, now))
		if i%1000 == 999 {
			time.Sleep(time.Millisecond)
		}
	}
}

// kill -9 in the middle of writing: the database opens, passes
// PRAGMA integrity_check, and holds every batch reported committed and at
// most one more (the one being committed when the signal came).
func TestKillDuringBatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.db")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	committed := 0
	killed := false
	for sc.Scan() {
		line := sc.Text()
		var n int
		if _, err := fmt.Sscanf(line, "committed %d", &n); err != nil {
			t.Fatalf("child: %s", line)
		}
		committed = n
		if !killed && committed >= 3000 {
			cmd.Process.Signal(syscall.SIGKILL)
			killed = true
		}
	}
	cmd.Wait()
	if !killed {
		t.Fatalf("the child stopped after %d decisions without being killed", committed)
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child ended with %v, want killed by SIGKILL", cmd.ProcessState)
	}

	db, err := sql.Open("sqlite", dsn(path, false))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var check string
	if err := db.QueryRow(`PRAGMA integrity_check`).Scan(&check); err != nil || check != "ok" {
		t.Fatalf("integrity_check: %q, %v", check, err)
	}
	var events int
	if err := db.QueryRow(`SELECT coalesce(sum(count), 0) FROM logins`).Scan(&events); err != nil {
		t.Fatal(err)
	}
	t.Logf("reported committed %d, found %d", committed, events)
	if events < committed || events > committed+500 {
		t.Errorf("database holds %d decisions; the child reported %d committed (want that, plus at most one batch of 500)", events, committed)
	}
	// And a store opens it and goes on writing.
	s, err := Open(Config{Path: path}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Record(ev("after", "192.0.2.1", ResultPass, time.Now()))
	s.Flush()
	st, err := s.Stats(context.Background())
	s.Close()
	if err != nil || st.Events != int64(events)+1 {
		t.Errorf("after reopening: %+v, %v; want %d events", st, err, events+1)
	}
}
