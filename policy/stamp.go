package policy

import (
	"os"
	"time"
)

// stamp identifies one version of a file cheaply. A rename over the file
// (how `mailgate allow` and most editors write) changes the inode even when
// size and mtime happen to match.
type stamp struct {
	exists bool
	size   int64
	mtime  time.Time
	ino    uint64
}

func stampOf(path string) stamp {
	if path == "" {
		return stamp{}
	}
	fi, err := os.Stat(path)
	if err != nil {
		return stamp{}
	}
	s := stamp{exists: true, size: fi.Size(), mtime: fi.ModTime()}
	s.ino = inode(fi)
	return s
}

// stamps of the user file and rules file, comparable with ==.
func stamps(files []string) [2]stamp {
	return [2]stamp{stampOf(files[0]), stampOf(files[1])}
}
