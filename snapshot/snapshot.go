// Package snapshot is lazysnap's containerd snapshotter. It keeps
// containerd's own metadata store (core/snapshots/storage) and the on-disk
// layout of containerd's overlay snapshotter (ROOT/metadata.db,
// ROOT/snapshots/<id>/{fs,work}); active snapshots are overlayfs over their
// parents. Layers containerd asks for with the remote-snapshot labels are
// mounted lazily by a FileSystem at their fs directory instead of being
// pulled; anything that cannot be lazy falls back to a normal pull.
//
// The package is a library: serving it over gRPC is cmd/lazysnap's job.
package snapshot

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
	continuityfs "github.com/containerd/continuity/fs"
	"github.com/containerd/errdefs"
)

// Snapshotter implements containerd's snapshots.Snapshotter.
type Snapshotter struct {
	root    string
	ms      *storage.MetaStore
	fs      FileSystem
	log     *slog.Logger
	metrics *metrics
	// mountMetrics times remote mounts (mount_metrics.go).
	mountMetrics *mountMetrics
	mountOpts    []string
	forget       Forgetter
}

var _ snapshots.Snapshotter = (*Snapshotter)(nil)

// New opens (or creates) a snapshotter in root. fs mounts remote layers; it
// may be nil, then every layer is pulled normally. Remote layers committed
// before a restart are checked and mounted again before New returns.
func New(ctx context.Context, root string, fs FileSystem, opts ...Option) (*Snapshotter, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if err := prepareRoot(root); err != nil {
		return nil, err
	}
	m, err := newMetrics(o.registerer)
	if err != nil {
		return nil, err
	}
	mm, err := newMountMetrics(o.registerer)
	if err != nil {
		return nil, err
	}
	ms, err := storage.NewMetaStore(filepath.Join(root, "metadata.db"))
	if err != nil {
		return nil, fmt.Errorf("opening metadata store in %s: %w", root, err)
	}
	s := &Snapshotter{
		root: root, ms: ms, fs: fs, log: o.logger, metrics: m, mountMetrics: mm,
		mountOpts: overlayOptions(o.mountOptions), forget: o.forget,
	}
	if err := s.restoreRemote(ctx); err != nil {
		ms.Close()
		return nil, err
	}
	return s, nil
}

func prepareRoot(root string) error {
	if err := os.MkdirAll(filepath.Join(root, "snapshots"), 0o700); err != nil {
		return fmt.Errorf("creating snapshotter root: %w", err)
	}
	// overlayfs needs d_type to see whiteouts in the upper dirs.
	ok, err := continuityfs.SupportsDType(root)
	if err != nil {
		return fmt.Errorf("checking d_type support of %s: %w", root, err)
	}
	if !ok {
		return fmt.Errorf("%s does not support d_type (xfs needs ftype=1): %w", root, errdefs.ErrFailedPrecondition)
	}
	return nil
}

// Stat returns the info of an active or committed snapshot by name or key.
func (s *Snapshotter) Stat(ctx context.Context, key string) (info snapshots.Info, err error) {
	err = s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		_, info, _, err = storage.GetInfo(ctx, key)
		return err
	})
	return info, err
}

// Update updates the labels of a snapshot.
func (s *Snapshotter) Update(ctx context.Context, info snapshots.Info, fieldpaths ...string) (newInfo snapshots.Info, err error) {
	err = s.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
		newInfo, err = storage.UpdateInfo(ctx, info, fieldpaths...)
		return err
	})
	return newInfo, err
}

// Usage returns the disk usage of a snapshot: the recorded usage for a
// committed one, a walk of the upper dir for an active one. A remote layer's
// usage is 0, its bytes live in the cache.
func (s *Snapshotter) Usage(ctx context.Context, key string) (snapshots.Usage, error) {
	var (
		id    string
		info  snapshots.Info
		usage snapshots.Usage
	)
	err := s.ms.WithTransaction(ctx, false, func(ctx context.Context) (err error) {
		id, info, usage, err = storage.GetInfo(ctx, key)
		return err
	})
	if err != nil || info.Kind != snapshots.KindActive {
		return usage, err
	}
	du, err := continuityfs.DiskUsage(ctx, s.upperPath(id))
	if err != nil {
		return snapshots.Usage{}, fmt.Errorf("disk usage of %q: %w", key, err)
	}
	return snapshots.Usage(du), nil
}

// View creates a read-only snapshot of parent.
func (s *Snapshotter) View(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	m, _, err := s.createSnapshot(ctx, snapshots.KindView, key, parent, opts)
	return m, err
}

// Mounts returns the mounts of an active or view snapshot again.
func (s *Snapshotter) Mounts(ctx context.Context, key string) ([]mount.Mount, error) {
	var (
		sn   storage.Snapshot
		info snapshots.Info
	)
	err := s.ms.WithTransaction(ctx, false, func(ctx context.Context) (err error) {
		if sn, err = storage.GetSnapshot(ctx, key); err != nil {
			return fmt.Errorf("getting active snapshot %q: %w", key, err)
		}
		_, info, _, err = storage.GetInfo(ctx, key)
		return err
	})
	if err != nil {
		return nil, err
	}
	return s.mounts(sn, info), nil
}

// Commit turns the active snapshot key into the committed snapshot name.
func (s *Snapshotter) Commit(ctx context.Context, name, key string, opts ...snapshots.Opt) error {
	return s.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
		id, _, _, err := storage.GetInfo(ctx, key)
		if err != nil {
			return err
		}
		du, err := continuityfs.DiskUsage(ctx, s.upperPath(id))
		if err != nil {
			return fmt.Errorf("disk usage of %q: %w", key, err)
		}
		if _, err := storage.CommitActive(ctx, key, name, snapshots.Usage(du), opts...); err != nil {
			return fmt.Errorf("committing snapshot %q as %q: %w", key, name, err)
		}
		return nil
	})
}

// Walk calls fn for every snapshot matching the filters.
func (s *Snapshotter) Walk(ctx context.Context, fn snapshots.WalkFunc, filters ...string) error {
	return s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		return storage.WalkInfo(ctx, fn, filters...)
	})
}

// Close closes the metadata store. It leaves remote layers mounted: they
// belong to the FileSystem, whose owner decides when to unmount them.
func (s *Snapshotter) Close() error {
	return s.ms.Close()
}

func (s *Snapshotter) upperPath(id string) string {
	return filepath.Join(s.root, "snapshots", id, "fs")
}

func (s *Snapshotter) workPath(id string) string {
	return filepath.Join(s.root, "snapshots", id, "work")
}
