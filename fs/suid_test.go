package fs_test

import (
	"archive/tar"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/lazysnap/lazysnap/internal/testenv"
	"github.com/lazysnap/lazysnap/internal/unixsock/unixsocktest"
)

// overlayOf mounts a container-like overlay (read-write, upper and work
// dirs of its own) over lower and returns its root, searchable by all.
func overlayOf(t *testing.T, lower string) string {
	t.Helper()
	dir := t.TempDir()
	upper, work, merged := filepath.Join(dir, "upper"), filepath.Join(dir, "work"), filepath.Join(dir, "merged")
	for _, d := range []string{upper, work, merged} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	opts := "lowerdir=" + lower + ",upperdir=" + upper + ",workdir=" + work
	if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		t.Fatalf("mounting overlay: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(merged, 0); err != nil {
			t.Errorf("unmounting overlay: %v", err)
		}
	})
	unixsocktest.OpenPath(t, merged)
	return merged
}

// runAs runs the probe in root as uid 1000, as `ctr run --user 1000` would.
func runAs(t *testing.T, root string) string {
	t.Helper()
	cmd := exec.Command("setpriv", "--reuid", "1000", "--regid", "1000", "--clear-groups",
		filepath.Join(root, "bin/probe"), filepath.Join(root, "devices/null"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %v: %s", cmd.Args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// readOnlyBindOf bind-mounts dir read-only as containerd mounts the
// snapshotter's bind mounts (package snapshot returns one for a view of a
// single layer, `ctr run --read-only` of a one-layer image): outside a user
// namespace its read-only remount sets exactly ro, dropping the source's
// nosuid and nodev (core/mount/mount_linux.go).
func readOnlyBindOf(t *testing.T, dir string) string {
	t.Helper()
	target := t.TempDir()
	if err := unix.Mount(dir, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		t.Fatalf("bind-mounting %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(target, 0); err != nil {
			t.Errorf("unmounting bind mount: %v", err)
		}
	})
	if err := unix.Mount("", target, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
		t.Fatalf("remounting bind mount read-only: %v", err)
	}
	unixsocktest.OpenPath(t, target)
	return target
}

// plainCopy writes the layer's probe and device into a plain directory, as
// containerd's overlayfs snapshotter unpacks them.
func plainCopy(t *testing.T, probe []byte) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{"bin", "devices"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin, dev := filepath.Join(dir, "bin/probe"), filepath.Join(dir, "devices/null")
	if err := os.WriteFile(bin, probe, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Chmod(bin, 0o4755); err != nil { // os.Chmod takes os.ModeSetuid, not 04000
		t.Fatal(err)
	}
	if err := unix.Mknod(dev, unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
		t.Fatal(err)
	}
	if err := unix.Chmod(dev, 0o666); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestSetuidAndDevicesLikeOverlayfs runs a set-user-ID-root program of a
// layer as uid 1000, and has it open a character device (c 1 3) of the
// layer. On the FUSE mount itself, which is nosuid and nodev, both are
// inert. In the two ways a container sees a lazysnap layer, through an
// overlay whose lower dir is the FUSE mount and through a read-only bind
// of it (a view of one layer), both work as on a plain directory, as with
// containerd's overlayfs snapshotter: euid 0, device usable.
func TestSetuidAndDevicesLikeOverlayfs(t *testing.T) {
	testenv.RequireFUSE(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("needs setpriv")
	}
	probe := testenv.SuidProbe(t)
	entries := []tentry{
		dir("bin/", 0o755),
		{name: "bin/probe", typ: tar.TypeReg, mode: 0o4755, size: int64(len(probe)), data: probe},
		dir("devices/", 0o755),
		{name: "devices/null", typ: tar.TypeChar, mode: 0o666, major: 1, minor: 3},
	}
	reg := testenv.StartRegistry(t)
	l := buildLayer(t, entries)
	lower := mount(t, newFS(t), push(t, reg.Host, "suid/app:v1", l), l)
	plain := plainCopy(t, probe)

	if f := mountFlags(t, lower); f&unix.ST_NOSUID == 0 || f&unix.ST_NODEV == 0 {
		t.Errorf("layer mount flags %#x, want nosuid and nodev", f)
	}
	unixsocktest.OpenPath(t, lower)
	if got := runAs(t, lower); got != "euid=1000 dev=EACCES" {
		t.Errorf("on the FUSE mount itself: %q, want euid=1000 dev=EACCES", got)
	}
	const want = "euid=0 dev=ok"
	for _, c := range []struct {
		name   string
		rootfs func(*testing.T, string) string
	}{
		{"overlay", overlayOf},
		{"read-only bind", readOnlyBindOf},
	} {
		if got := runAs(t, c.rootfs(t, plain)); got != want {
			t.Fatalf("%s of a plain directory: %q, want %q (the host, not lazysnap, differs)", c.name, got, want)
		}
		if got := runAs(t, c.rootfs(t, lower)); got != want {
			t.Errorf("%s of the lazysnap layer: %q, want %q as on overlayfs (mount flags %#x)",
				c.name, got, want, mountFlags(t, lower))
		}
	}
}

func mountFlags(t *testing.T, p string) int64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Flags
}
