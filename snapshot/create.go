package snapshot

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
)

// Prepare creates an active snapshot on parent. When the labels ask for a
// remote layer (see remoteTarget) it tries to mount that layer lazily
// first; then, on success, it returns an error wrapping
// errdefs.ErrAlreadyExists so containerd skips the download.
func (s *Snapshotter) Prepare(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	if req, ok := remoteRequest(opts); ok {
		return s.prepareRemote(ctx, key, parent, req, opts)
	}
	m, _, err := s.createSnapshot(ctx, snapshots.KindActive, key, parent, opts)
	return m, err
}

// createSnapshot records the snapshot and makes its directory. The
// directory is built under a temporary name and renamed into place inside
// the transaction, so a crash leaves either nothing or an orphan that
// Cleanup removes.
func (s *Snapshotter) createSnapshot(ctx context.Context, kind snapshots.Kind, key, parent string, opts []snapshots.Opt) ([]mount.Mount, string, error) {
	if err := s.waitAncestors(ctx, parent); err != nil {
		return nil, "", err
	}
	var (
		sn   storage.Snapshot
		info snapshots.Info
	)
	err := s.ms.WithTransaction(ctx, true, func(ctx context.Context) (err error) {
		td, err := s.prepareDirectory(kind)
		if err != nil {
			return err
		}
		defer func() {
			if err != nil {
				s.removeDir(ctx, td)
			}
		}()
		if sn, err = storage.CreateSnapshot(ctx, kind, key, parent, opts...); err != nil {
			return fmt.Errorf("creating snapshot %q: %w", key, err)
		}
		if _, info, _, err = storage.GetInfo(ctx, key); err != nil {
			return err
		}
		if err := s.chownLikeParent(td, sn.ParentIDs); err != nil {
			return err
		}
		if err := os.Rename(td, filepath.Join(s.root, "snapshots", sn.ID)); err != nil {
			return fmt.Errorf("moving snapshot directory into place: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	return s.mounts(sn, info), sn.ID, nil
}

// waitAncestors waits, outside any transaction, until the remote layers
// below parent that are being mounted again are, and fails if one cannot
// be: see waitLayers.
func (s *Snapshotter) waitAncestors(ctx context.Context, parent string) error {
	if parent == "" || s.restores == nil || len(s.restores.all()) == 0 {
		return nil
	}
	ids, err := s.ancestorIDs(ctx, parent)
	if err != nil {
		return fmt.Errorf("looking up the parents of %q: %w", parent, err)
	}
	return s.waitLayers(ctx, ids)
}

func (s *Snapshotter) prepareDirectory(kind snapshots.Kind) (string, error) {
	td, err := os.MkdirTemp(filepath.Join(s.root, "snapshots"), "new-")
	if err != nil {
		return "", fmt.Errorf("creating snapshot directory: %w", err)
	}
	if err := os.Mkdir(filepath.Join(td, "fs"), 0o755); err != nil {
		os.RemoveAll(td)
		return "", fmt.Errorf("creating snapshot directory: %w", err)
	}
	if kind == snapshots.KindActive {
		if err := os.Mkdir(filepath.Join(td, "work"), 0o711); err != nil {
			os.RemoveAll(td)
			return "", fmt.Errorf("creating snapshot work directory: %w", err)
		}
	}
	return td, nil
}

// chownLikeParent gives the new upper dir the owner of the parent's root:
// overlayfs shows the upper dir's owner for "/", so without this a layer
// owned by a non-root user would change hands in the child.
func (s *Snapshotter) chownLikeParent(td string, parentIDs []string) error {
	if len(parentIDs) == 0 {
		return nil
	}
	st, err := os.Stat(s.upperPath(parentIDs[0]))
	if err != nil {
		return fmt.Errorf("stat parent snapshot: %w", err)
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("stat parent snapshot: unexpected %T", st.Sys())
	}
	if err := os.Lchown(filepath.Join(td, "fs"), int(sys.Uid), int(sys.Gid)); err != nil {
		return fmt.Errorf("chown snapshot directory: %w", err)
	}
	return nil
}
