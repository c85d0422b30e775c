package cache

import (
	"errors"
	"os"
	"syscall"
	"testing"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

func TestDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatalf("mounting a 1 MiB tmpfs as root: %v", err) // root can: a failure is a broken host
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })

	s := openStore(t, dir)
	c := newContent(t, 4<<20) // sparse: sizing it allocates nothing
	e := openEntry(t, s, c)
	write(t, e, c, 0, 512<<10)

	err := e.WriteAt(c.data[1<<20:2<<20], 1<<20)
	if !errors.Is(err, syscall.ENOSPC) || !errdefs.IsResourceExhausted(err) {
		t.Fatalf("WriteAt on a full disk: err = %v, want ENOSPC, resource exhausted", err)
	}
	if e.Has(1<<20, 1) || e.Has(1<<20, 1<<20) {
		t.Error("range of failed write marked present")
	}
	if _, err := e.ReadAt(make([]byte, 4096), 1<<20); !errors.Is(err, ErrNotPresent) {
		t.Errorf("ReadAt of failed write: err = %v, want ErrNotPresent", err)
	}
	if got := s.Stats().Bytes; got != 512<<10 {
		t.Errorf("Stats.Bytes = %d, want %d", got, 512<<10)
	}
	readPrefix := make([]byte, 512<<10)
	if _, err := e.ReadAt(readPrefix, 0); err != nil {
		t.Errorf("earlier write lost: %v", err)
	}
}
