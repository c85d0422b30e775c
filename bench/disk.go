package bench

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// A case's node keeps its state (containerd's root with its content and
// snapshots, the snapshotter's root and cache) on a file system made for
// that case, as a cold node's disk would be: fresh, with no history.
//
// Without it, every case's files went to the same ext4 file system that
// the previous cases had just filled and emptied, and ext4 does not reuse
// an inode within a minute or more of its deletion (recently_deleted, in
// its inode allocator): each file a case created made the allocator walk
// past the tens of thousands of inodes the previous case's teardown had
// freed. `perf record` on fused during a scipy case at 1 Gbit/s showed
// 40% of its CPU there (find_inode_bit, recently_deleted,
// find_get_block_common), the ready time 5.4-5.9 s; on a fresh file system
// 4.3 s. Every mode creates files (overlayfs unpacks every file of the
// image), so the history skewed the comparison by how many files a mode
// creates, not by anything a real cold node shows.

// diskBytes is the size of a case's file system (sparse: it costs what
// the case writes), and diskInodes its inode count: the largest image of
// the set holds ~30,000 files, a case stores each at most three times
// (content, snapshot, cache).
const (
	diskBytes  = 32 << 30
	diskInodes = 1_000_000
)

// freshDisk makes a file system for the case (an ext4 image under dir,
// loop-mounted on /run/lzd-*), points TMPDIR at it so that every folder the case's node
// makes lives there, and unmounts and deletes it when the case ends, after
// the node's own teardown (its cleanup is registered first, so it runs
// last). It returns the image's path.
func freshDisk(tb testing.TB, dir string) string {
	tb.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		tb.Fatalf("fresh disk: %v", err)
	}
	img, err := os.CreateTemp(dir, "node-*.img")
	if err != nil {
		tb.Fatalf("fresh disk: %v", err)
	}
	img.Close()
	// The mount point is short: the node's unix sockets live below it, and
	// a socket path has at most 108 bytes. The image stays on disk.
	mnt, err := os.MkdirTemp("/run", "lzd-")
	if err != nil {
		tb.Fatalf("fresh disk: %v", err)
	}
	tb.Cleanup(func() {
		if err := unmountDisk(mnt); err != nil {
			tb.Errorf("fresh disk: %v", err)
		}
		os.Remove(mnt)
		os.Remove(img.Name())
	})
	steps := [][]string{
		{"truncate", "-s", fmt.Sprint(diskBytes), img.Name()},
		// Inode tables and journal are written now, not by the kernel in the
		// background while the case runs.
		{"mkfs.ext4", "-q", "-F", "-N", fmt.Sprint(diskInodes), "-E", "lazy_itable_init=0,lazy_journal_init=0", img.Name()},
		{"mount", "-o", "loop", img.Name(), mnt},
	}
	for _, s := range steps {
		if out, err := exec.Command(s[0], s[1:]...).CombinedOutput(); err != nil {
			tb.Fatalf("fresh disk: %v: %v\n%s", s, err, bytes.TrimSpace(out))
		}
	}
	tb.Setenv("TMPDIR", mnt)
	return img.Name()
}

// unmountDisk unmounts a case's file system, waiting a little for the
// last processes of the node to let go of it, then detaching it lazily.
func unmountDisk(mnt string) error {
	var out []byte
	var err error
	for range 20 {
		if out, err = exec.Command("umount", mnt).CombinedOutput(); err == nil {
			return nil
		}
		time.Sleep(250 * time.Millisecond)
	}
	if lazy, lerr := exec.Command("umount", "-l", mnt).CombinedOutput(); lerr != nil {
		return fmt.Errorf("unmounting %s: %v: %s; lazily: %v: %s", mnt, err, out, lerr, lazy)
	}
	return nil
}

// diskDir is where the cases' file system images live.
func diskDir() string { return filepath.Join("/var/tmp", "lazysnap-bench-disks") }
