//go:build unix

package policy

import (
	"fmt"
	"os"
	"syscall"
)

// lockDir takes an exclusive advisory lock on a directory, so two
// `mailgate allow` runs editing files there do not lose each other's
// change. Locking the directory leaves no lock files behind.
func lockDir(dir string) (unlock func(), err error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	if err := syscall.Flock(int(d.Fd()), syscall.LOCK_EX); err != nil {
		d.Close()
		return nil, fmt.Errorf("policy: locking %s: %w", dir, err)
	}
	return func() {
		_ = syscall.Flock(int(d.Fd()), syscall.LOCK_UN)
		d.Close()
	}, nil
}

// chownLike gives f the owner and group of fi, when allowed.
func chownLike(f *os.File, fi os.FileInfo) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		_ = f.Chown(int(st.Uid), int(st.Gid)) // EPERM unless root: keep ours
	}
}

// inode of a file, to see a rename over it.
func inode(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Ino)
	}
	return 0
}
