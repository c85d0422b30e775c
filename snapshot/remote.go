package snapshot

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
	"github.com/containerd/containerd/v2/pkg/snapshotters"
	"github.com/containerd/errdefs"
)

// LabelRemote marks a committed snapshot whose fs dir is a lazy mount of
// the FileSystem; restart and removal look for it.
const LabelRemote = "containerd.io/snapshot/lazysnap.remote"

// LabelParentChainID tells the FileSystem the chain ID of the snapshot a
// remote layer sits on, so that it can check the layer's content against
// the chain ID the layer is committed as (package fs's LabelParentChainID:
// the two packages do not import each other). Absent for a bottom layer.
const LabelParentChainID = "containerd.io/snapshot/lazysnap.parent-chain-id"

// parentChainID returns the chain ID in a parent's key: containerd's
// metadata store hands backends keys like "default/12/sha256:..." for
// snapshots it committed and the bare name for remote ones committed here.
func parentChainID(parent string) string {
	return parent[strings.LastIndexByte(parent, '/')+1:]
}

// remoteReq is what a Prepare needs to mount a layer lazily.
type remoteReq struct {
	target string // the committed name containerd looks for (the chain ID)
	labels map[string]string
}

// remoteRequest reports whether containerd's remote-snapshot handler asked
// for this layer: the unpacker's target name plus the image and layer
// labels of snapshotters.AppendInfoHandlerWrapper.
func remoteRequest(opts []snapshots.Opt) (remoteReq, bool) {
	var base snapshots.Info
	for _, o := range opts {
		if err := o(&base); err != nil {
			return remoteReq{}, false
		}
	}
	l := base.Labels
	target := l[snapshots.LabelSnapshotRef]
	if target == "" || l[snapshotters.TargetRefLabel] == "" || l[snapshotters.TargetLayerDigestLabel] == "" {
		return remoteReq{}, false
	}
	return remoteReq{target: target, labels: l}, true
}

func isRemote(labels map[string]string) bool {
	return labels[LabelRemote] == "true"
}

// prepareRemote creates the active snapshot as a normal Prepare would, then
// mounts the layer on its fs dir and commits it under the target name. If
// the mount fails, the active snapshot is what containerd unpacks into: the
// fallback is simply returning its mounts.
func (s *Snapshotter) prepareRemote(ctx context.Context, key, parent string, req remoteReq, opts []snapshots.Opt) ([]mount.Mount, error) {
	name, exists, err := s.targetName(ctx, req.target)
	if err != nil {
		return nil, err
	}
	if exists {
		return nil, fmt.Errorf("target snapshot %q: %w", req.target, errdefs.ErrAlreadyExists)
	}
	if parent != "" {
		req.labels = maps.Clone(req.labels)
		req.labels[LabelParentChainID] = parentChainID(parent)
	}
	m, id, err := s.createSnapshot(ctx, snapshots.KindActive, key, parent, opts)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	err = s.mountLayer(ctx, id, req.labels)
	s.mountMetrics.observe(start, err)
	if err != nil {
		s.countFallback(ctx, req, err)
		return m, nil
	}
	if name == "" {
		name = req.target + "@" + id
	}
	if err := s.commitRemote(ctx, key, id, name, req); err != nil {
		s.abandonRemote(ctx, key, id)
		return nil, err
	}
	s.metrics.remoteMounts.Inc()
	s.track(remoteLayer{id: id, name: name, labels: req.labels})
	s.log.InfoContext(ctx, "layer mounted lazily", "layer", req.labels[snapshotters.TargetLayerDigestLabel], "snapshot", req.target)
	return nil, fmt.Errorf("layer mounted lazily as %q: %w", req.target, errdefs.ErrAlreadyExists)
}

// targetName tells whether a usable snapshot committed as target exists
// (under its name, or under another name with target as its snapshot-ref
// label), and otherwise the name to commit it as: target itself, or "" when
// a bad layer, withdrawn from reuse, holds that name (the caller then
// commits under a name of its own; containerd finds the snapshot by its
// label).
func (s *Snapshotter) targetName(ctx context.Context, target string) (name string, exists bool, err error) {
	info, err := s.Stat(ctx, target)
	switch {
	case err == nil && !isBad(info.Labels):
		return target, true, nil
	case err != nil && !errdefs.IsNotFound(err):
		return "", false, err
	case err != nil:
		return target, false, nil
	}
	filter := fmt.Sprintf(`kind==committed,labels.%q==%q`, snapshots.LabelSnapshotRef, target)
	err = s.Walk(ctx, func(context.Context, snapshots.Info) error {
		exists = true
		return nil
	}, filter)
	return "", exists, err
}

func (s *Snapshotter) mountLayer(ctx context.Context, id string, labels map[string]string) error {
	if s.fs == nil {
		return errNoFileSystem
	}
	return s.fs.Mount(ctx, s.upperPath(id), labels)
}

func (s *Snapshotter) countFallback(ctx context.Context, req remoteReq, err error) {
	reason := fallbackReason(err)
	s.metrics.fallbacks.WithLabelValues(reason).Inc()
	s.log.InfoContext(ctx, "layer falls back to a normal pull",
		"layer", req.labels[snapshotters.TargetLayerDigestLabel],
		"image", req.labels[snapshotters.TargetRefLabel],
		"reason", reason, "error", err)
}

// commitRemote commits the mounted active snapshot under the target name.
// CommitActive replaces labels, so the Prepare labels are passed again;
// they are what a restart needs to mount the layer again. Usage is 0: the
// layer's bytes live in the cache, and walking the mount to measure it
// would list the whole layer through FUSE.
func (s *Snapshotter) commitRemote(ctx context.Context, key, id, name string, req remoteReq) error {
	labels := maps.Clone(req.labels)
	labels[LabelRemote] = "true"
	return s.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
		_, err := storage.CommitActive(ctx, key, name, snapshots.Usage{}, snapshots.WithLabels(labels))
		if err != nil {
			return fmt.Errorf("committing remote layer %s as %q: %w", id, name, err)
		}
		return nil
	})
}

// abandonRemote undoes a mount whose commit failed (typically another
// Prepare committed the same target first).
func (s *Snapshotter) abandonRemote(ctx context.Context, key, id string) {
	if err := s.fs.Unmount(ctx, s.upperPath(id)); err != nil {
		s.log.WarnContext(ctx, "unmounting uncommitted remote layer", "id", id, "error", err)
	}
	if err := s.Remove(ctx, key); err != nil {
		s.log.WarnContext(ctx, "removing uncommitted remote layer", "key", key, "error", err)
	}
}
