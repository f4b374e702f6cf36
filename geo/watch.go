package geo

import (
	"context"
	"os"
	"time"
)

// fileStamp identifies the version of a file geo read: a replaced file
// (geoipupdate renames a new one into place) or one rewritten in place
// changes size or modification time.
type fileStamp struct {
	size  int64
	mtime time.Time
}

func stampOf(fi os.FileInfo) fileStamp { return fileStamp{size: fi.Size(), mtime: fi.ModTime()} }

// Watch polls the configured files every WatchInterval (DefaultWatchInterval
// when zero) and reloads when one changed. A change that fails to load is
// logged once and retried only when the file changes again, while the old
// databases keep serving. Watch returns when ctx is done; with polling
// disabled (a negative interval) or only the embedded database it just
// waits for ctx. Run it in its own goroutine.
func (d *DB) Watch(ctx context.Context) {
	for {
		interval := d.cur.Load().cfg.WatchInterval
		if interval == 0 {
			interval = DefaultWatchInterval
		}
		if interval < 0 {
			// Polling off; a ReloadConfig may turn it on, so look again
			// now and then.
			interval = DefaultWatchInterval
		}
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		d.poll()
	}
}

// poll reloads once when any configured file differs from what the
// current snapshot read and from the last version that failed to load.
func (d *DB) poll() {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	s := d.cur.Load()
	if s.cfg.WatchInterval < 0 {
		return
	}
	changed := false
	for i, f := range s.cfg.Databases {
		if f == EmbeddedName {
			continue
		}
		fi, err := os.Stat(f)
		if err != nil {
			// Missing for a moment during an update, or removed: keep
			// serving; report it once per distinct state.
			if d.failed[f] != (fileStamp{size: -1}) {
				d.failed[f] = fileStamp{size: -1}
				d.log.Error("geo database file unreadable; keeping the loaded copy", "file", f, "err", err)
			}
			continue
		}
		st := stampOf(fi)
		if st != s.stamps[i] && st != d.failed[f] {
			changed = true
		}
	}
	if !changed {
		return
	}
	if err := d.reloadLocked(s.cfg); err != nil {
		// Remember what failed so it is not retried (and logged) on every
		// poll; any further change is tried again.
		for _, f := range s.cfg.Databases {
			if fi, serr := os.Stat(f); serr == nil {
				d.failed[f] = stampOf(fi)
			}
		}
		return
	}
	clear(d.failed)
}
