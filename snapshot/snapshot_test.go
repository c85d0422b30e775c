package snapshot

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/testsuite"
	"github.com/containerd/containerd/v2/pkg/snapshotters"
	"github.com/containerd/errdefs"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/lazysnap/lazysnap/internal/testenv"
)

// suiteName is the name given to containerd's test suite. The suite keys
// one expectation on it: overlayfs without redirect_dir cannot rename a
// directory that lives in a lower layer (EXDEV). lazysnap's active
// snapshots are overlayfs, so they share that documented limitation, and
// the suite must know it is testing overlayfs.
const suiteName = "overlayfs"

func TestSnapshotterSuite(t *testing.T) {
	testenv.RequireRoot(t)
	testsuite.SnapshotterSuite(t, suiteName, func(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
		s, err := New(ctx, root, nil)
		if err != nil {
			return nil, nil, err
		}
		return s, s.Close, nil
	})
}

// TestSnapshotterSuiteFallback runs the suite with a FileSystem whose Mount
// always fails, and with remote-snapshot labels added to every Prepare: each
// Prepare goes through the remote path and falls back, and the suite must
// stay green. The cleanup checks that every Mount was counted as a fallback.
func TestSnapshotterSuiteFallback(t *testing.T) {
	testenv.RequireRoot(t)
	var total atomic.Int64
	// Runs after the suite's parallel subtests: the remote path must have
	// been taken, or this test would prove nothing.
	t.Cleanup(func() {
		if total.Load() == 0 {
			t.Error("no Prepare went through the remote path")
		}
	})
	testsuite.SnapshotterSuite(t, suiteName, func(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
		fsys := &failingFS{total: &total}
		s, err := New(ctx, root, fsys)
		if err != nil {
			return nil, nil, err
		}
		cleanup := func() error {
			err := s.Close()
			got := counterValue(t, s.metrics.fallbacks.WithLabelValues(ReasonUnreachable))
			if want := fsys.mounts.Load(); got != float64(want) {
				return fmt.Errorf("%v fallbacks counted for %d failed mounts", got, want)
			}
			return err
		}
		return remoteLabeling{s}, cleanup, nil
	})
}

// failingFS is a fault-injecting FileSystem: every Mount fails as if the
// registry were unreachable.
type failingFS struct {
	mounts atomic.Int64
	total  *atomic.Int64
}

func (f *failingFS) Mount(context.Context, string, map[string]string) error {
	f.mounts.Add(1)
	f.total.Add(1)
	return fmt.Errorf("injected: %w", errdefs.ErrUnavailable)
}

func (f *failingFS) Check(context.Context, string, map[string]string) error {
	return errdefs.ErrNotFound
}

func (f *failingFS) Unmount(context.Context, string) error { return errdefs.ErrNotFound }

// remoteLabeling adds the labels of containerd's remote-snapshot handler to
// every Prepare, as a containerd with remote snapshot annotations would.
type remoteLabeling struct{ *Snapshotter }

func (r remoteLabeling) Prepare(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	opts = append(opts, snapshots.WithLabels(map[string]string{
		snapshots.LabelSnapshotRef:          "target/" + key,
		snapshotters.TargetRefLabel:         "registry.test/suite:latest",
		snapshotters.TargetLayerDigestLabel: "sha256:0000",
	}))
	return r.Snapshotter.Prepare(ctx, key, parent, opts...)
}

func counterValue(t testing.TB, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatalf("reading counter: %v", err)
	}
	return m.GetCounter().GetValue()
}
