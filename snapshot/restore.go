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
	"github.com/moby/sys/mountinfo"
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
	remote remoteLayer

	mu      sync.Mutex
	attempt chan struct{} // closed when the attempt under way ends; nil when none is
	err     error         // why the layer is not mounted; nil once it is
	tried   time.Time     // when the last attempt ended
}

// begin records that an attempt to mount the layer starts, unless one is
// under way already (then it reports false and the caller leaves it to
// that one): snapshots stacked on the layer wait until end.
func (st *layerState) begin() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.attempt != nil {
		return false
	}
	st.attempt = make(chan struct{})
	return true
}

// record records the outcome of the attempt under way; end then lets the
// snapshots waiting for it go on. They are two steps so that what reports
// the outcome (the gauge) is current before any waiter returns.
func (st *layerState) record(err error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.err, st.tried = err, time.Now()
}

func (st *layerState) end() {
	st.mu.Lock()
	defer st.mu.Unlock()
	close(st.attempt)
	st.attempt = nil
}

// wait waits for the attempt under way, if any, and returns why the layer
// is not mounted, or nil.
func (st *layerState) wait(ctx context.Context) error {
	st.mu.Lock()
	attempt := st.attempt
	st.mu.Unlock()
	if attempt != nil {
		select {
		case <-attempt:
		case <-ctx.Done():
			return fmt.Errorf("waiting for remote layer %s to be mounted again: %w", st.remote.name, ctx.Err())
		}
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.err
}

// restores tracks the remote layers mounted again since this process
// started, by snapshot ID.
type restores struct {
	mu     sync.Mutex
	byID   map[string]*layerState
	cancel context.CancelFunc
	done   chan struct{} // closed when the first round ended
}

// state returns l's state, created (with no attempt under way) if needed.
func (r *restores) state(l remoteLayer) *layerState {
	r.mu.Lock()
	defer r.mu.Unlock()
	st, ok := r.byID[l.id]
	if !ok {
		st = &layerState{remote: l}
		r.byID[l.id] = st
	}
	return st
}

// track records a remote layer mounted by this process, so that a
// snapshot stacked on it checks its mount is alive (see waitLayers).
func (s *Snapshotter) track(l remoteLayer) {
	if s.restores != nil {
		s.restores.state(l)
	}
}

func (s *Snapshotter) untrack(id string) {
	if s.restores != nil {
		s.restores.mu.Lock()
		delete(s.restores.byID, id)
		s.restores.mu.Unlock()
	}
}

func (r *restores) lookup(id string) (*layerState, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st, ok := r.byID[id]
	return st, ok
}

func (r *restores) all() []*layerState {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*layerState, 0, len(r.byID))
	for _, st := range r.byID {
		out = append(out, st)
	}
	return out
}

// startRestore checks, and where needed mounts again, every committed
// remote layer in the background, a few at once, so that containerd
// reaches the snapshotter at once after a restart. Until a layer's attempt
// ends, snapshots stacked on it wait for it; a layer that could not be
// mounted fails them loudly (see waitLayers) and is tried again by
// RetryRestore.
func (s *Snapshotter) startRestore(ctx context.Context) error {
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.restores = &restores{byID: map[string]*layerState{}, cancel: cancel, done: make(chan struct{})}
	sts, err := s.beginAll(ctx)
	if err != nil {
		cancel()
		return err
	}
	go func() {
		defer close(s.restores.done)
		s.runAll(rctx, sts)
	}()
	return nil
}

// beginAll starts an attempt on every committed remote layer.
func (s *Snapshotter) beginAll(ctx context.Context) ([]*layerState, error) {
	layers, err := s.remoteLayers(ctx)
	if errdefs.IsNotFound(err) {
		return nil, nil // a new store has no buckets yet
	}
	if err != nil {
		return nil, fmt.Errorf("listing remote layers: %w", err)
	}
	var sts []*layerState
	for _, l := range layers {
		if st := s.restores.state(l); st.begin() {
			sts = append(sts, st)
		}
	}
	return sts, nil
}

// runAll runs the attempts begun on sts, a few at once.
func (s *Snapshotter) runAll(ctx context.Context, sts []*layerState) {
	var g errgroup.Group
	g.SetLimit(s.opts.restoreConcurrency)
	for _, st := range sts {
		g.Go(func() error {
			s.restoreLayer(ctx, st)
			return nil
		})
	}
	g.Wait()
}

// RemountAll checks every committed remote layer and mounts again those the
// FileSystem lost: serve calls it after it restarted a fused that died.
// Snapshots stacked on a layer wait while it is being mounted again.
func (s *Snapshotter) RemountAll(ctx context.Context) error {
	sts, err := s.beginAll(ctx)
	if err != nil {
		return err
	}
	s.runAll(ctx, sts)
	return nil
}

// stopRestore cancels restores in flight and waits for the first round.
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
	st.record(err)
	l := st.remote
	if err != nil {
		s.log.ErrorContext(ctx, "remote layer could not be mounted; containers that need it fail to start until it is",
			"snapshot", l.name, "image", l.labels[snapshotters.TargetRefLabel],
			"layer", l.labels[snapshotters.TargetLayerDigestLabel], "error", err)
	}
	s.restoreMetrics.unmounted.Set(float64(len(s.failedLayers())))
	st.end()
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
		if due && ctx.Err() == nil && st.begin() {
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
	for _, st := range s.restores.all() {
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
		st, ok := s.restores.lookup(id)
		if !ok {
			continue
		}
		err := st.wait(ctx)
		if err == nil && !s.mountAlive(st.remote) {
			// The FileSystem lost the mount (fused died) and the
			// supervisor has not mounted it again yet: do it now rather
			// than stack a container on a dead or empty directory.
			if st.begin() {
				s.restoreLayer(ctx, st)
			}
			err = st.wait(ctx)
		}
		if err != nil {
			l := st.remote
			return fmt.Errorf("layer %s of image %s (snapshot %s) is not mounted: %w; lazysnap retries it in the background: %w",
				l.labels[snapshotters.TargetLayerDigestLabel], l.labels[snapshotters.TargetRefLabel], l.name,
				err, errdefs.ErrUnavailable)
		}
	}
	return nil
}

// mountAlive reports whether something is mounted at the layer's
// directory and answers: statfs of a FUSE mount whose server died fails
// (ENOTCONN), and a directory with nothing mounted is no mount point.
func (s *Snapshotter) mountAlive(l remoteLayer) bool {
	dir := s.upperPath(l.id)
	var st unix.Statfs_t
	if unix.Statfs(dir, &st) != nil {
		return false
	}
	mounted, err := mountinfo.Mounted(dir)
	return err == nil && mounted
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
