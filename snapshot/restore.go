package snapshot

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
	"github.com/containerd/containerd/v2/pkg/snapshotters"
	"github.com/containerd/errdefs"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"
)

type remoteLayer struct {
	id     string
	name   string
	labels map[string]string
}

// layerState is whether a committed remote layer is mounted since this
// process started: its directory is empty otherwise, and a container
// stacked on it would silently miss the layer's files.
type layerState struct {
	ready  chan struct{} // closed once the first restore attempt ended
	mu     sync.Mutex
	err    error // why the layer is not mounted; nil once it is
	tried  time.Time
	remote remoteLayer
}

func (st *layerState) result() error {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.err
}

// restores tracks the remote layers restored at start, by snapshot ID.
type restores struct {
	mu     sync.Mutex
	byID   map[string]*layerState
	cancel context.CancelFunc
	done   chan struct{}
}

// startRestore looks up every committed remote layer and checks, and where
// needed mounts again, each of them in the background, a few at once, so
// that containerd reaches the snapshotter at once after a restart. Until a
// layer's first attempt ends, snapshots stacked on it wait for it; a layer
// that could not be mounted fails them loudly (see waitLayers) and is tried
// again by RetryRestore.
func (s *Snapshotter) startRestore(ctx context.Context) error {
	layers, err := s.remoteLayers(ctx)
	if errdefs.IsNotFound(err) {
		layers, err = nil, nil // a new store has no buckets yet
	}
	if err != nil {
		return fmt.Errorf("listing remote layers: %w", err)
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.restores = &restores{byID: map[string]*layerState{}, cancel: cancel, done: make(chan struct{})}
	for _, l := range layers {
		s.restores.byID[l.id] = &layerState{ready: make(chan struct{}), remote: l,
			err: fmt.Errorf("not restored yet: %w", errdefs.ErrUnavailable)}
	}
	go func() {
		defer close(s.restores.done)
		var g errgroup.Group
		g.SetLimit(s.opts.restoreConcurrency)
		for _, st := range s.restores.byID {
			g.Go(func() error {
				s.restoreLayer(rctx, st)
				close(st.ready)
				return nil
			})
		}
		g.Wait()
	}()
	return nil
}

// stopRestore cancels restores in flight and waits for them.
func (s *Snapshotter) stopRestore() {
	if s.restores != nil {
		s.restores.cancel()
		<-s.restores.done
	}
}

// restoreLayer makes sure one remote layer is mounted, within the restore
// timeout, and records the outcome.
func (s *Snapshotter) restoreLayer(ctx context.Context, st *layerState) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.restoreTimeout)
	defer cancel()
	err := s.mountAgain(ctx, st.remote)
	st.mu.Lock()
	st.err, st.tried = err, time.Now()
	st.mu.Unlock()
	l := st.remote
	if err != nil {
		s.log.ErrorContext(ctx, "remote layer could not be mounted; containers that need it fail to start until it is",
			"snapshot", l.name, "image", l.labels[snapshotters.TargetRefLabel],
			"layer", l.labels[snapshotters.TargetLayerDigestLabel], "error", err)
	}
	s.restoreMetrics.unmounted.Set(float64(len(s.failedLayers())))
}

// mountAgain checks the layer's mount and mounts it again when the
// FileSystem does not have it (a fused that restarted, or a reboot). A
// mount the FileSystem has whose registry is unreachable is left alone:
// it still serves what is cached, and containers read from it.
func (s *Snapshotter) mountAgain(ctx context.Context, l remoteLayer) error {
	if s.fs == nil {
		return errNoFileSystem
	}
	dir := s.upperPath(l.id)
	err := s.fs.Check(ctx, dir, l.labels)
	if err == nil || !errdefs.IsNotFound(err) {
		if err != nil {
			s.log.WarnContext(ctx, "remote layer mounted but unhealthy", "snapshot", l.name, "error", err)
		}
		return nil
	}
	// A FUSE mount whose server died (ENOTCONN) may still sit on the
	// directory: detach it, or the new mount would stack on a dead one.
	if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("detaching the dead mount at %s: %w", dir, err)
	}
	s.log.InfoContext(ctx, "mounting remote layer again", "snapshot", l.name, "check", err)
	if err := s.fs.Mount(ctx, dir, l.labels); err != nil {
		return fmt.Errorf("mounting again: %w", err)
	}
	return nil
}

// RetryRestore tries again, one at a time, the remote layers that could not
// be mounted at start, each at most once per minimum retry interval. serve
// runs it periodically.
func (s *Snapshotter) RetryRestore(ctx context.Context) {
	for _, st := range s.failedLayers() {
		st.mu.Lock()
		due := time.Since(st.tried) >= s.opts.restoreRetry
		st.mu.Unlock()
		if due && ctx.Err() == nil {
			s.restoreLayer(ctx, st)
		}
	}
}

// failedLayers returns the layers whose first restore attempt ended without
// a mount.
func (s *Snapshotter) failedLayers() []*layerState {
	var out []*layerState
	if s.restores == nil {
		return nil
	}
	for _, st := range s.restores.byID {
		st.mu.Lock()
		if !st.tried.IsZero() && st.err != nil {
			out = append(out, st)
		}
		st.mu.Unlock()
	}
	return out
}

// waitLayers waits for the layers ids that are being restored, and fails
// with an error naming the image and the layer when one of them could not
// be mounted: a container must not start without a layer's files (or with
// files that layer deletes). It wraps errdefs.ErrUnavailable.
func (s *Snapshotter) waitLayers(ctx context.Context, ids []string) error {
	if s.restores == nil {
		return nil
	}
	for _, id := range ids {
		st, ok := s.restores.byID[id]
		if !ok {
			continue
		}
		select {
		case <-st.ready:
		case <-ctx.Done():
			return fmt.Errorf("waiting for remote layer %s to be mounted again: %w", st.remote.name, ctx.Err())
		}
		if err := st.result(); err != nil {
			l := st.remote
			return fmt.Errorf("layer %s of image %s (snapshot %s) is not mounted: %w; lazysnap retries it in the background: %w",
				l.labels[snapshotters.TargetLayerDigestLabel], l.labels[snapshotters.TargetRefLabel], l.name,
				err, errdefs.ErrUnavailable)
		}
	}
	return nil
}

// ancestorIDs returns the IDs of the snapshot named parent and of its
// ancestors, nearest first ("" has none).
func (s *Snapshotter) ancestorIDs(ctx context.Context, parent string) ([]string, error) {
	var ids []string
	err := s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		for name := parent; name != ""; {
			id, info, _, err := storage.GetInfo(ctx, name)
			if err != nil {
				return err
			}
			ids = append(ids, id)
			name = info.Parent
		}
		return nil
	})
	return ids, err
}

func (s *Snapshotter) remoteLayers(ctx context.Context) ([]remoteLayer, error) {
	var layers []remoteLayer
	err := s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		return storage.WalkInfo(ctx, func(ctx context.Context, info snapshots.Info) error {
			if info.Kind != snapshots.KindCommitted || !isRemote(info.Labels) {
				return nil
			}
			id, _, _, err := storage.GetInfo(ctx, info.Name)
			if err != nil {
				return err
			}
			layers = append(layers, remoteLayer{id: id, name: info.Name, labels: info.Labels})
			return nil
		})
	})
	return layers, err
}
