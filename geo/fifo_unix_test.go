//go:build unix

package geo

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestFIFODatabase: a FIFO configured as a database is refused at once
// (opening it for reading would block until a writer appears).
func TestFIFODatabase(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "fifo.mmdb")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("cannot make a FIFO: %v", err)
	}
	_, err := Open(Config{Databases: []string{fifo}}, nil)
	if err == nil || !strings.Contains(err.Error(), fifo) || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("Open(FIFO) = %v, want a not-a-regular-file error naming it", err)
	}
}
