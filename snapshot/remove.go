package snapshot

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containerd/containerd/v2/core/snapshots/storage"
	"github.com/containerd/errdefs"
	"github.com/moby/sys/mountinfo"
)

// Remove removes a snapshot. A remote layer is unmounted inside the
// transaction, so when the FileSystem cannot unmount it the snapshot stays
// recorded and containerd may retry; directories are deleted after the
// transaction commits.
func (s *Snapshotter) Remove(ctx context.Context, key string) error {
	var orphans []string
	err := s.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
		id, info, _, err := storage.GetInfo(ctx, key)
		if err != nil {
			return err
		}
		if _, _, err := storage.Remove(ctx, key); err != nil {
			return fmt.Errorf("removing snapshot %q: %w", key, err)
		}
		if isRemote(info.Labels) {
			if err := s.unmountRemote(ctx, id); err != nil {
				return err
			}
			s.untrack(id)
		}
		orphans, err = s.orphanDirs(ctx)
		return err
	})
	if err != nil {
		return err
	}
	for _, dir := range orphans {
		s.removeDir(ctx, dir)
	}
	return nil
}

// Cleanup removes the directories no snapshot owns any more, unmounting
// remote layers left by a crash between Mount and commit first.
func (s *Snapshotter) Cleanup(ctx context.Context) error {
	var orphans []string
	// A write transaction keeps snapshots from being created while the
	// directory list is compared with the store.
	err := s.ms.WithTransaction(ctx, true, func(ctx context.Context) (err error) {
		orphans, err = s.orphanDirs(ctx)
		return err
	})
	if err != nil {
		return err
	}
	for _, dir := range orphans {
		if s.fs != nil {
			if err := s.fs.Unmount(ctx, filepath.Join(dir, "fs")); err != nil && !errdefs.IsNotFound(err) {
				s.log.WarnContext(ctx, "unmounting orphan layer", "dir", dir, "error", err)
			}
		}
		s.removeDir(ctx, dir)
	}
	return nil
}

func (s *Snapshotter) unmountRemote(ctx context.Context, id string) error {
	if s.fs == nil {
		// removeDir refuses to delete a mounted dir, so this is safe.
		s.log.WarnContext(ctx, "remote layer removed without a file system to unmount it", "id", id)
		return nil
	}
	err := s.fs.Unmount(ctx, s.upperPath(id))
	if err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("unmounting remote layer %s: %w", id, err)
	}
	return nil
}

// orphanDirs lists the snapshot directories whose ID is not in the store.
func (s *Snapshotter) orphanDirs(ctx context.Context) ([]string, error) {
	ids, err := storage.IDMap(ctx)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(s.root, "snapshots")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("listing snapshot directories: %w", err)
	}
	var orphans []string
	for _, e := range entries {
		if _, ok := ids[e.Name()]; !ok {
			orphans = append(orphans, filepath.Join(dir, e.Name()))
		}
	}
	return orphans, nil
}

// removeDir deletes a snapshot directory unless something is still mounted
// on its fs dir: deleting through a mount would delete the layer's
// contents (or fail half way on a read-only FUSE mount).
func (s *Snapshotter) removeDir(ctx context.Context, dir string) {
	if mounted, err := mountinfo.Mounted(filepath.Join(dir, "fs")); err == nil && mounted {
		s.log.WarnContext(ctx, "not removing snapshot directory: still mounted", "dir", dir)
		return
	}
	if err := os.RemoveAll(dir); err != nil {
		s.log.WarnContext(ctx, "removing snapshot directory", "dir", dir, "error", err)
	}
}
