//go:build unix

package policy

import (
	"errors"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// A FIFO named as a policy file is refused at once: opening it for
// reading would block until a writer appears, and a start, a reload or
// `mailgate allow` must never hang on it. Without the check this test
// hangs until go test's timeout.
func TestFIFOPolicyFile(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "user-allowed.php")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("cannot make a FIFO: %v", err)
	}
	for name, read := range map[string]func() error{
		"user file":  func() error { _, err := readUserFile(fifo); return err },
		"rules file": func() error { _, err := readCapped(fifo); return err },
	} {
		err := read()
		if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "not a regular file") || !strings.Contains(err.Error(), fifo) {
			t.Errorf("%s: %v, want a not-a-regular-file error naming %s", name, err, fifo)
		}
	}
}
