package snapshot

import (
	"context"
	"errors"
	"fmt"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/snapshotters"
	"github.com/containerd/errdefs"
	"github.com/moby/sys/mountinfo"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/lazysnap/lazysnap/internal/testenv"
)

// bindFS stands in for the FUSE file system only to test the snapshotter's
// bookkeeping: Mount populates a directory from the labels and bind-mounts
// it read-only at the mountpoint, so the kernel really has a mount there.
// The real FUSE path is covered by the integration tests.
type bindFS struct {
	src string

	mu       sync.Mutex
	mounted  map[string]bool
	calls    []string
	labels   []map[string]string // of each Mount
	bad      map[string]string   // BadLayers' answer
	failWith error
}

func (b *bindFS) BadLayers(context.Context) (map[string]string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return maps.Clone(b.bad), nil
}

func newBindFS(t *testing.T) *bindFS {
	return &bindFS{src: t.TempDir(), mounted: map[string]bool{}}
}

func (b *bindFS) record(call, mountpoint string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls = append(b.calls, call+" "+mountpoint)
}

func (b *bindFS) count(call string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, c := range b.calls {
		if len(c) > len(call) && c[:len(call)+1] == call+" " {
			n++
		}
	}
	return n
}

func (b *bindFS) Mount(_ context.Context, mountpoint string, labels map[string]string) error {
	b.record("mount", mountpoint)
	b.mu.Lock()
	b.labels = append(b.labels, labels)
	b.mu.Unlock()
	if b.failWith != nil {
		return b.failWith
	}
	dir := filepath.Join(b.src, filepath.Base(filepath.Dir(mountpoint)))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	layer := labels[snapshotters.TargetLayerDigestLabel]
	if err := os.WriteFile(filepath.Join(dir, "layer"), []byte(layer), 0o644); err != nil {
		return err
	}
	if err := unix.Mount(dir, mountpoint, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind mount: %w", err)
	}
	if err := unix.Mount("", mountpoint, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		unix.Unmount(mountpoint, 0)
		return fmt.Errorf("read-only remount: %w", err)
	}
	b.mu.Lock()
	b.mounted[mountpoint] = true
	b.mu.Unlock()
	return nil
}

func (b *bindFS) Check(_ context.Context, mountpoint string, _ map[string]string) error {
	b.record("check", mountpoint)
	if ok, err := mountinfo.Mounted(mountpoint); err != nil || !ok {
		return fmt.Errorf("%s: %w", mountpoint, errdefs.ErrNotFound)
	}
	return nil
}

func (b *bindFS) Unmount(_ context.Context, mountpoint string) error {
	b.record("unmount", mountpoint)
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.mounted[mountpoint] {
		return fmt.Errorf("%s: %w", mountpoint, errdefs.ErrNotFound)
	}
	delete(b.mounted, mountpoint)
	return unix.Unmount(mountpoint, 0)
}

func remoteOpts(target, layer string) snapshots.Opt {
	return snapshots.WithLabels(map[string]string{
		snapshots.LabelSnapshotRef:                 target,
		snapshotters.TargetRefLabel:                "registry.test/app:v1",
		snapshotters.TargetLayerDigestLabel:        layer,
		snapshotters.TargetImageLayersLabel:        layer,
		"containerd.io/snapshot/stargz/toc.digest": "sha256:70c",
	})
}

func TestRemoteLayer(t *testing.T) {
	testenv.RequireRoot(t)
	ctx := context.Background()
	root := t.TempDir()
	fsys := newBindFS(t)
	s, err := New(ctx, root, fsys)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()

	_, err = s.Prepare(ctx, "extract-1", "", remoteOpts("chain-1", "sha256:aaa"))
	if !errdefs.IsAlreadyExists(err) {
		t.Fatalf("Prepare of a remote layer: got %v, want ErrAlreadyExists", err)
	}
	info, err := s.Stat(ctx, "chain-1")
	if err != nil {
		t.Fatal(err)
	}
	if info.Kind != snapshots.KindCommitted || !isRemote(info.Labels) {
		t.Fatalf("target snapshot: kind %v labels %v, want a committed remote snapshot", info.Kind, info.Labels)
	}
	if _, err := s.Stat(ctx, "extract-1"); !errdefs.IsNotFound(err) {
		t.Fatalf("the extraction key should be gone after the commit, Stat: %v", err)
	}

	checkChildSeesLayer(ctx, t, s, "chain-1", "sha256:aaa")

	// Restart with the mount gone, as after a crash of the FUSE side.
	s.Close()
	id := snapshotID(ctx, t, root, "chain-1")
	mp := filepath.Join(root, "snapshots", id, "fs")
	if err := fsys.Unmount(ctx, mp); err != nil {
		t.Fatal(err)
	}
	if s, err = New(ctx, root, fsys); err != nil {
		t.Fatal(err)
	}
	<-s.restores.done
	if fsys.count("check") != 1 || fsys.count("mount") != 2 {
		t.Fatalf("restart: calls %v, want one Check and a second Mount", fsys.calls)
	}
	checkChildSeesLayer(ctx, t, s, "chain-1", "sha256:aaa")

	// Restart with the mount alive: Check only.
	s.Close()
	if s, err = New(ctx, root, fsys); err != nil {
		t.Fatal(err)
	}
	<-s.restores.done
	if fsys.count("check") != 2 || fsys.count("mount") != 2 {
		t.Fatalf("restart: calls %v, want a second Check and no new Mount", fsys.calls)
	}

	if err := s.Remove(ctx, "chain-1"); err != nil {
		t.Fatal(err)
	}
	if fsys.count("unmount") != 2 { // one by the test above, one by Remove
		t.Fatalf("Remove: calls %v, want an Unmount", fsys.calls)
	}
	if _, err := os.Stat(filepath.Join(root, "snapshots", id)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("snapshot directory left after Remove: %v", err)
	}
	if _, err := os.Stat(filepath.Join(fsys.src, id, "layer")); err != nil {
		t.Fatalf("Remove deleted through the mount: %v", err)
	}
}

// TestRemoteLayerParentChainID: the FileSystem learns the chain ID of the
// snapshot a remote layer sits on, whether containerd committed it (a key
// like "default/12/sha256:...") or lazysnap did (the bare chain ID), so
// that it can check the layer against the chain ID it is committed as.
func TestRemoteLayerParentChainID(t *testing.T) {
	testenv.RequireRoot(t)
	ctx := context.Background()
	fsys := newBindFS(t)
	s, err := New(ctx, t.TempDir(), fsys)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		s.Close()
		for mp := range fsys.mounted {
			fsys.Unmount(ctx, mp)
		}
	}()
	const c1, c2 = "sha256:1111111111111111111111111111111111111111111111111111111111111111",
		"sha256:2222222222222222222222222222222222222222222222222222222222222222"
	if _, err := s.Prepare(ctx, "default/3/extract-1", ""); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, "default/4/"+c1, "default/3/extract-1"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ parent, want string }{
		{"default/4/" + c1, c1}, // committed by containerd's unpacker
		{c2, c2},                // committed here, lazily
	} {
		target := "sha256:" + strings.Repeat(tc.want[7:8], 63) + "f"
		if tc.parent == c2 {
			if _, err := s.Prepare(ctx, "x-"+c2, "", remoteOpts(c2, "sha256:bbb")); !errdefs.IsAlreadyExists(err) {
				t.Fatal(err)
			}
		}
		if _, err := s.Prepare(ctx, "x-"+target, tc.parent, remoteOpts(target, "sha256:ccc")); !errdefs.IsAlreadyExists(err) {
			t.Fatalf("remote Prepare on %s: %v", tc.parent, err)
		}
		got := fsys.labels[len(fsys.labels)-1]
		if got[LabelParentChainID] != tc.want || got[snapshots.LabelSnapshotRef] != target {
			t.Errorf("on parent %s the FileSystem got parent %q and target %q, want %q and %q",
				tc.parent, got[LabelParentChainID], got[snapshots.LabelSnapshotRef], tc.want, target)
		}
	}
	if got := fsys.labels[1]; got[snapshots.LabelSnapshotRef] != c2 || got[LabelParentChainID] != "" {
		t.Errorf("bottom layer %s got parent chain ID %q", got[snapshots.LabelSnapshotRef], got[LabelParentChainID])
	}
}

// TestQuarantineBad: a layer the FileSystem reports bad is labelled with
// the reason, loses its snapshot-ref label, is handed to the Forgetter
// (every round, until containerd has forgotten it), and a new remote
// Prepare of the same chain ID commits a fresh snapshot beside it.
func TestQuarantineBad(t *testing.T) {
	testenv.RequireRoot(t)
	ctx := context.Background()
	root := t.TempDir()
	fsys := newBindFS(t)
	var forgotten []string
	forget := func(_ context.Context, name string) error {
		forgotten = append(forgotten, name)
		return nil
	}
	s, err := New(ctx, root, fsys, WithForgetter(forget))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		s.Close()
		for mp := range fsys.mounted {
			fsys.Unmount(ctx, mp)
		}
	}()
	if _, err := s.Prepare(ctx, "extract-1", "", remoteOpts("chain-1", "sha256:aaa")); !errdefs.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	if err := s.QuarantineBad(ctx); err != nil || len(forgotten) != 0 {
		t.Fatalf("nothing bad: QuarantineBad = %v, forgotten %v", err, forgotten)
	}
	layers := mustRemoteLayers(ctx, t, s)
	if len(layers) != 1 {
		t.Fatalf("%d remote layers", len(layers))
	}
	fsys.bad = map[string]string{s.upperPath(layers[0].id): "lies"}
	for range 2 {
		if err := s.QuarantineBad(ctx); err != nil {
			t.Fatal(err)
		}
	}
	info, err := s.Stat(ctx, "chain-1")
	if err != nil {
		t.Fatal(err)
	}
	if info.Labels[LabelBad] != "lies" || info.Labels[LabelBadChainID] != "chain-1" || info.Labels[snapshots.LabelSnapshotRef] != "" {
		t.Errorf("bad layer's labels: %v", info.Labels)
	}
	if len(forgotten) != 2 || forgotten[0] != "chain-1" {
		t.Errorf("forgotten %v, want chain-1 once per round", forgotten)
	}

	if _, err := s.Prepare(ctx, "extract-2", "", remoteOpts("chain-1", "sha256:bbb")); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("Prepare of a chain ID a bad layer held: %v, want ErrAlreadyExists", err)
	}
	var fresh []string
	err = s.Walk(ctx, func(_ context.Context, i snapshots.Info) error {
		fresh = append(fresh, i.Name)
		return nil
	}, fmt.Sprintf("labels.%q==chain-1", snapshots.LabelSnapshotRef))
	if err != nil || len(fresh) != 1 || !strings.HasPrefix(fresh[0], "chain-1@") {
		t.Fatalf("snapshots labelled chain-1: %v, %v; want one fresh one", fresh, err)
	}
	if _, err := s.Prepare(ctx, "extract-3", "", remoteOpts("chain-1", "sha256:bbb")); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("Prepare again: %v", err)
	}
	if n := fsys.count("mount"); n != 2 {
		t.Errorf("%d mounts, want 2: the fresh snapshot is reused", n)
	}
}

// checkChildSeesLayer prepares an active snapshot on parent, mounts it and
// reads the file the layer's mount provides through overlayfs.
func checkChildSeesLayer(ctx context.Context, t *testing.T, s *Snapshotter, parent, layer string) {
	t.Helper()
	key := "container-" + t.Name()
	mounts, err := s.Prepare(ctx, key, parent)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Remove(ctx, key)
	if len(mounts) != 1 || mounts[0].Type != "overlay" {
		t.Fatalf("mounts of a child of a remote layer: %+v, want one overlay", mounts)
	}
	target := t.TempDir()
	if err := mount.All(mounts, target); err != nil {
		t.Fatal(err)
	}
	defer mount.UnmountAll(target, 0)
	got, err := os.ReadFile(filepath.Join(target, "layer"))
	if err != nil || string(got) != layer {
		t.Fatalf("reading the remote layer's file through the overlay: %q, %v; want %q", got, err, layer)
	}
}

func snapshotID(ctx context.Context, t *testing.T, root, name string) string {
	t.Helper()
	s, err := New(ctx, root, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, l := range mustRemoteLayers(ctx, t, s) {
		if l.name == name {
			return l.id
		}
	}
	t.Fatalf("no remote layer %q", name)
	return ""
}

func mustRemoteLayers(ctx context.Context, t *testing.T, s *Snapshotter) []remoteLayer {
	t.Helper()
	l, err := s.remoteLayers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestRemoteFallback(t *testing.T) {
	testenv.RequireRoot(t)
	ctx := context.Background()
	fsys := newBindFS(t)
	fsys.failWith = fmt.Errorf("layer has no TOC: %w", errdefs.ErrNotImplemented)
	reg := prometheus.NewRegistry()
	s, err := New(ctx, t.TempDir(), fsys, WithRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	mounts, err := s.Prepare(ctx, "extract-1", "", remoteOpts("chain-1", "sha256:bbb"))
	if err != nil {
		t.Fatalf("Prepare of a plain layer must fall back, got %v", err)
	}
	if len(mounts) != 1 || mounts[0].Type != "bind" {
		t.Fatalf("fallback mounts: %+v, want the usual bind mount to unpack into", mounts)
	}
	if got := counterValue(t, s.metrics.fallbacks.WithLabelValues(ReasonUnsupported)); got != 1 {
		t.Fatalf("fallbacks{reason=%s} = %v, want 1", ReasonUnsupported, got)
	}
	if err := s.Commit(ctx, "chain-1", "extract-1"); err != nil {
		t.Fatalf("committing the unpacked fallback layer: %v", err)
	}
	if info, err := s.Stat(ctx, "chain-1"); err != nil || isRemote(info.Labels) {
		t.Fatalf("fallback layer: %+v, %v; want a committed, non-remote snapshot", info, err)
	}
	families, err := reg.Gather()
	if err != nil || len(families) == 0 {
		t.Fatalf("metrics not registered on the given registry: %v", err)
	}
}

// TestRestoreFailsLoudly is a reboot with the registry down: serve starts
// at once, a container stacked on the layer that could not be mounted
// fails to start with an error naming the image and the layer (instead of
// running without the layer's files), the gauge counts it, and a later
// retry mounts it.
func TestRestoreFailsLoudly(t *testing.T) {
	testenv.RequireRoot(t)
	ctx := context.Background()
	root := t.TempDir()
	fsys := newBindFS(t)
	s, err := New(ctx, root, fsys)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Prepare(ctx, "extract-1", "", remoteOpts("chain-1", "sha256:aaa")); !errdefs.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	s.Close()
	for mp := range fsys.mounted { // the reboot
		fsys.Unmount(ctx, mp)
	}
	fsys.failWith = fmt.Errorf("registry down: %w", errdefs.ErrUnavailable)
	reg := prometheus.NewRegistry()
	if s, err = New(ctx, root, fsys, WithRegisterer(reg), WithRestore(2, time.Second, 0)); err != nil {
		t.Fatal(err)
	}
	defer func() {
		s.Close()
		for mp := range fsys.mounted {
			fsys.Unmount(ctx, mp)
		}
	}()
	_, err = s.Prepare(ctx, "container-1", "chain-1")
	if !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), "sha256:aaa") || !strings.Contains(err.Error(), "registry.test/app:v1") {
		t.Fatalf("container on an unmounted layer: %v; want unavailable, naming layer and image", err)
	}
	if got := testutil.ToFloat64(s.restoreMetrics.unmounted); got != 1 {
		t.Errorf("lazysnap_snapshot_unmounted_layers = %v, want 1", got)
	}

	fsys.failWith = nil
	s.RetryRestore(ctx)
	checkChildSeesLayer(ctx, t, s, "chain-1", "sha256:aaa")
	if got := testutil.ToFloat64(s.restoreMetrics.unmounted); got != 0 {
		t.Errorf("after the retry lazysnap_snapshot_unmounted_layers = %v, want 0", got)
	}
}
