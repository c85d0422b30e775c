package record

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/containerd/v2/pkg/archive"
	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"
)

// sandbox is an image's root filesystem, extracted to lower, under a
// writable overlay mounted at merged.
type sandbox struct {
	dir    string // holds everything below; removed by close
	lower  string // the extracted image
	merged string // the overlay the workload runs in
	upper  string // the overlay's upper dir: what the workload wrote
	mounts []string
}

// newSandbox extracts img under a new directory in workDir and mounts the
// overlay. The caller must close it.
func newSandbox(ctx context.Context, img v1.Image, workDir string) (_ *sandbox, err error) {
	dir, err := os.MkdirTemp(workDir, "lazysnap-record-")
	if err != nil {
		return nil, fmt.Errorf("creating sandbox dir: %w", err)
	}
	// overlayfs takes its layers in a comma and colon separated option.
	if strings.ContainsAny(dir, ",:") {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("work dir %q holds ',' or ':', which overlayfs options cannot: %w", dir, errdefs.ErrInvalidArgument)
	}
	s := &sandbox{dir: dir, lower: filepath.Join(dir, "rootfs"), merged: filepath.Join(dir, "merged")}
	defer func() {
		if err != nil {
			err = errors.Join(err, s.close())
		}
	}()
	if err := extract(ctx, img, s.lower); err != nil {
		return nil, err
	}
	if err := s.mountOverlay(); err != nil {
		return nil, err
	}
	return s, nil
}

// extract applies the layers of img, lowest first, to dir. containerd's
// applier handles whiteouts, hard links, devices and ownership, and keeps
// every entry (and symlink target it writes through) inside dir.
func extract(ctx context.Context, img v1.Image, dir string) error {
	if err := os.Mkdir(dir, 0o755); err != nil {
		return fmt.Errorf("creating rootfs dir: %w", err)
	}
	layers, err := img.Layers()
	if err != nil {
		return fmt.Errorf("listing layers: %w", err)
	}
	for i, l := range layers {
		if err := applyLayer(ctx, l, dir); err != nil {
			return fmt.Errorf("extracting layer %d: %w", i, err)
		}
	}
	return nil
}

func applyLayer(ctx context.Context, l v1.Layer, dir string) error {
	rc, err := l.Uncompressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	_, err = archive.Apply(ctx, dir, rc)
	return err
}

// mountOverlay mounts merged: the image read-only below, a tmpfs above, so
// the workload may write anywhere while the image stays as extracted and the
// overlay's superblock (the one recorded) belongs to this run only.
func (s *sandbox) mountOverlay() error {
	scratch := filepath.Join(s.dir, "scratch")
	if err := s.mount("tmpfs", scratch, "tmpfs", "mode=0755", unix.MS_NODEV|unix.MS_NOSUID); err != nil {
		return err
	}
	s.upper = filepath.Join(scratch, "upper")
	work := filepath.Join(scratch, "work")
	for _, d := range []string{s.upper, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return fmt.Errorf("creating overlay dir: %w", err)
		}
	}
	data := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", s.lower, s.upper, work)
	// No nosuid or nodev: the workload sees its image as it would in a container.
	return s.mount("overlay", s.merged, "overlay", data, 0)
}

func (s *sandbox) mount(source, target, fstype, data string, flags uintptr) error {
	if err := os.Mkdir(target, 0o755); err != nil {
		return fmt.Errorf("creating mount point: %w", err)
	}
	if err := unix.Mount(source, target, fstype, flags, data); err != nil {
		return fmt.Errorf("mounting %s on %s: %w", fstype, target, err)
	}
	s.mounts = append(s.mounts, target)
	return nil
}

// close unmounts, last mounted first, and removes the directory. Nothing is
// removed while a mount is left, so a failed unmount never deletes through it.
func (s *sandbox) close() error {
	for len(s.mounts) > 0 {
		m := s.mounts[len(s.mounts)-1]
		if err := unix.Unmount(m, 0); err != nil && !errors.Is(err, unix.EINVAL) {
			if err := unix.Unmount(m, unix.MNT_DETACH); err != nil {
				return fmt.Errorf("unmounting %s (left in place): %w", m, err)
			}
		}
		s.mounts = s.mounts[:len(s.mounts)-1]
	}
	if err := os.RemoveAll(s.dir); err != nil {
		return fmt.Errorf("removing sandbox: %w", err)
	}
	return nil
}
