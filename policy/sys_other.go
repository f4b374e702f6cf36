//go:build !unix

package policy

import "os"

// lockDir is a no-op where flock does not exist.
func lockDir(string) (func(), error) { return func() {}, nil }

func chownLike(*os.File, os.FileInfo) {}

func inode(os.FileInfo) uint64 { return 0 }
