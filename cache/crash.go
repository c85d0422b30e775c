package cache

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// A presence record is appended right after its data is written, without
// fsync: a daemon crash loses neither, because both sit in the kernel's page
// cache. Only a machine crash can write back the record and not the data,
// and then a "present" range could read as zeros. Rather than pay an fsync
// per chunk, the store leaves a run marker holding the kernel's boot id while
// it is open and removes it on a clean Close after syncing the filesystem. A
// marker from another boot means the machine went down with the store open:
// the presence records cannot be trusted and the cache is discarded.
const (
	lockName   = "lock"
	markerName = "running"
	bootIDPath = "/proc/sys/kernel/random/boot_id"
)

// lockDir takes an exclusive lock on the store directory so that two daemons
// never share (and corrupt) one cache.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open cache lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("cache %s is in use by another process: %w", dir, errdefs.ErrUnavailable)
		}
		return nil, fmt.Errorf("lock cache %s: %w", dir, err)
	}
	return f, nil
}

// bootID identifies the running kernel boot; empty if unknown, which makes
// any leftover marker look like it came from another boot.
func bootID() []byte {
	b, err := os.ReadFile(bootIDPath)
	if err != nil {
		return nil
	}
	return bytes.TrimSpace(b)
}

// uncleanReboot reports whether the store in dir was left open by an earlier
// boot, that is whether the machine crashed while the store was in use.
func uncleanReboot(dir string) (bool, error) {
	b, err := os.ReadFile(filepath.Join(dir, markerName))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read run marker: %w", err)
	}
	id := bootID()
	return len(id) == 0 || !bytes.Equal(bytes.TrimSpace(b), id), nil
}

// markRunning writes the run marker durably, so it is on disk before any
// chunk this run writes can be.
func markRunning(dir string) error {
	f, err := os.OpenFile(filepath.Join(dir, markerName), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("write run marker: %w", err)
	}
	_, err = f.Write(append(bootID(), '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write run marker: %w", err)
	}
	return syncDir(dir)
}

// markClean syncs everything the store wrote and then removes the marker.
func markClean(dir string, lock *os.File) error {
	if err := unix.Syncfs(int(lock.Fd())); err != nil {
		return fmt.Errorf("sync cache filesystem: %w", err)
	}
	if err := os.Remove(filepath.Join(dir, markerName)); err != nil {
		return fmt.Errorf("remove run marker: %w", err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
