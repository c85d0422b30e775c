// Package fs mounts eStargz layers straight from their registry as
// read-only FUSE file systems, one per layer, for the snapshotter to stack
// with overlayfs. It implements the snapshotter's FileSystem contract
// (Mount, Check, Unmount) in-process.
package fs

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/containerd/containerd/v2/pkg/snapshotters"
	"github.com/containerd/errdefs"
	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/lazysnap/lazysnap/cache"
	"github.com/lazysnap/lazysnap/fs/layer"
	"github.com/lazysnap/lazysnap/fs/node"
	"github.com/lazysnap/lazysnap/fs/remote"
	"github.com/lazysnap/lazysnap/fs/sharedtrace"
	"github.com/lazysnap/lazysnap/prefetchlist"
)

// Labels containerd's remote-snapshot handler puts on a layer's Prepare:
// containerd's own names, not copies that could drift, kept under these
// names for the callers (and readers) of package fs. The TOC digest is the
// eStargz layer annotation the handler copies.
const (
	LabelImageRef    = snapshotters.TargetRefLabel
	LabelLayerDigest = snapshotters.TargetLayerDigestLabel
	LabelTOCDigest   = estargz.TOCJSONDigestAnnotation
	// LabelManifestDigest names the image's (platform) manifest, which a
	// trace shared through the registry refers to.
	LabelManifestDigest = snapshotters.TargetManifestDigestLabel
)

// FS mounts layers. It is safe for concurrent use.
type FS struct {
	opts      options
	store     *cache.Store
	ownsStore bool
	resolver  *remote.Resolver
	flights   *layer.Flights
	sched     *layer.Scheduler
	traces    *traces             // nil when not recording
	shared    *sharedtrace.Finder // nil when not looking for shared traces
	ahead     *tocsAhead          // nil when not reading TOCs ahead

	diffIDMismatches atomic.Int64 // layers found not to match their chain ID

	libsMu     sync.Mutex
	libs       sync.WaitGroup // fetches of the libraries binaries need (fetchLibraries)
	libsClosed bool           // Close began: no more of them

	mu     sync.Mutex
	mounts map[string]*mounted
}

// mounted is one mounted layer.
type mounted struct {
	layer   *layer.Layer
	node    *node.Mounted
	ref     string
	labels  map[string]string // of the Mount, for a handover
	fetches *fetches
	traced  bool // holds a recorder of f.traces for ref
	// tracePaths are the files this node saw the image open first, in
	// order, prefetched when the layer has no prioritized region;
	// traceRanges the byte ranges read of the large ones among them (those
	// without are prefetched whole).
	tracePaths  []string
	traceRanges map[string][]prefetchlist.Range
	// sharedTrace, when this node has no trace of the image, is the lookup
	// of one another node shared; the prefetch waits for it.
	sharedTrace *sharedtrace.Lookup
	// labelPaths are the files the image's LabelPrefetchRanges names,
	// prefetched in labelRanges beside the prioritized region.
	labelPaths  []string
	labelRanges map[string][]prefetchlist.Range

	chain  chainCheck   // what the layer's content must add up to
	verify bool         // whether to check it (chain labels present, verification on)
	diffID atomic.Value // string: DiffIDPending, DiffIDVerified...
}

// New returns an FS.
func New(opts ...Option) (*FS, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	f := &FS{
		opts: o, store: o.store, resolver: o.resolver, mounts: map[string]*mounted{},
		flights: layer.NewFlights(),
		sched:   layer.NewScheduler(append([]layer.SchedulerOption{layer.WithBackgroundBytesPerSecond(o.backgroundRate)}, o.schedOpts...)...),
	}
	if f.store == nil {
		s, err := cache.Open(o.cacheDir, o.cacheOpts...)
		if err != nil {
			return nil, fmt.Errorf("opening the cache in %s: %w", o.cacheDir, err)
		}
		f.store, f.ownsStore = s, true
	}
	if f.resolver == nil {
		f.resolver = remote.NewResolver()
	}
	f.prepareSpoolDir()
	f.traces = newTraces(o.traceDir, o.traceMaxFiles, o.traceFlush, o.logger)
	if f.traces != nil && o.prefetch && o.tracePrefetch && o.traceShared {
		f.shared = sharedtrace.NewFinder(sharedtrace.WithKeychain(f.resolver.Keychain()), sharedtrace.WithLogger(o.logger))
	}
	if o.tocAhead {
		f.ahead = newTOCsAhead()
	}
	return f, nil
}

// target is what the labels of a layer's Prepare ask to mount.
type target struct {
	ref       string
	digest    digest.Digest
	tocDigest digest.Digest
}

func parseLabels(labels map[string]string) (target, error) {
	t := target{ref: labels[LabelImageRef]}
	if t.ref == "" {
		return t, fmt.Errorf("label %s missing: %w", LabelImageRef, errdefs.ErrInvalidArgument)
	}
	for _, l := range []struct {
		name string
		dst  *digest.Digest
	}{{LabelLayerDigest, &t.digest}, {LabelTOCDigest, &t.tocDigest}} {
		d, err := digest.Parse(labels[l.name])
		if err != nil {
			return t, fmt.Errorf("label %s=%q: %v: %w", l.name, labels[l.name], err, errdefs.ErrInvalidArgument)
		}
		*l.dst = d
	}
	return t, nil
}

// Mount mounts the layer the labels describe at mountpoint, read-only. It
// fails with errdefs.ErrInvalidArgument for missing or bad labels,
// errdefs.ErrNotFound or ErrUnavailable when the registry lacks the blob or
// cannot be reached, and ErrDataLoss when the layer's TOC does not match its
// TOC digest.
//
// Once mounted, the layer's prefetch (WithPrefetch) and then its background
// fetch (WithBackgroundFetch) start; Mount returns at once, or after the
// prefetch when that takes less than WithPrefetchWait. Layers mounted one
// after the other therefore prefetch in parallel.
func (f *FS) Mount(ctx context.Context, mountpoint string, labels map[string]string) error {
	return f.serve(ctx, mountpoint, labels, false, func(l *layer.Layer, opts []node.Option) (*node.Mounted, error) {
		return node.Mount(mountpoint, l, opts...)
	})
}

// serve builds the layer the labels describe and has start serve it at
// mountpoint: a new mount, or one handed over (resumed, see Resume).
func (f *FS) serve(ctx context.Context, mountpoint string, labels map[string]string, resumed bool, start startFunc) (retErr error) {
	t, err := parseLabels(labels)
	if err != nil {
		return err
	}
	if err := f.reserve(mountpoint); err != nil {
		return err
	}
	defer func() {
		if retErr != nil {
			f.release(mountpoint)
		}
	}()
	if f.ahead != nil && !resumed {
		// Before this layer's own TOC: the next layers' TOCs then come
		// over the link and are decoded on the other core while this
		// one is, not only while this one is mounted.
		f.ahead.start(t, labels, f.readTOCAhead)
	}
	toc, err := f.layerTOC(ctx, mountpoint, t, resumed)
	if err != nil {
		return err
	}
	spec := mountSpec{ref: t.ref, digest: t.digest, bad: labels[LabelBad], labels: labels}
	spec.chain, spec.verify = parseChain(labels)
	spec.verify = spec.verify && f.opts.verifyDiffID && spec.bad == ""
	m, err := f.mountLayer(toc, mountpoint, spec, start)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.mounts[mountpoint] = m
	f.mu.Unlock()
	f.opts.logger.InfoContext(ctx, "mounted layer", "ref", t.ref, "layer", t.digest, "mountpoint", mountpoint,
		"inodes", m.layer.Index().Len())
	if m.fetches.waitPrefetch(ctx, f.opts.prefetchWait) {
		f.opts.logger.DebugContext(ctx, "prefetch done before mount returned", "layer", t.digest)
	}
	return nil
}

// startFunc serves l with the node options.
type startFunc func(l *layer.Layer, opts []node.Option) (*node.Mounted, error)

// mountLayer serves toc's layer at mountpoint and starts its fetches.
// mountSpec is what a Mount asks of the layer besides its blob.
type mountSpec struct {
	ref    string
	digest digest.Digest // the layer's blob
	chain  chainCheck
	verify bool   // check the layer's content against chain
	bad    string // the layer was found bad before: why
	labels map[string]string
}

func (f *FS) mountLayer(toc *layer.TOC, mountpoint string, spec mountSpec, start startFunc) (*mounted, error) {
	opts := append([]layer.Option{
		layer.WithFlights(f.flights),
		layer.WithScheduler(f.sched),
		layer.WithOwner("mount:" + mountpoint),
		layer.WithLogger(f.opts.logger),
	}, f.opts.layerOpts...)
	opts = append(opts, f.headReadHook(spec.ref)...)
	if f.willStream(spec) {
		opts = append(opts, layer.WithSpoolDir(f.opts.spoolDir))
	}
	l, err := layer.New(toc, f.store, opts...)
	if err != nil {
		return nil, err
	}
	ref := spec.ref
	m := &mounted{layer: l, ref: ref, chain: spec.chain, verify: spec.verify, labels: spec.labels}
	switch {
	case spec.bad != "":
		l.MarkBad(errors.New(spec.bad))
		m.diffID.Store(DiffIDMismatch)
	case spec.verify:
		m.diffID.Store(DiffIDPending)
	default:
		m.diffID.Store(DiffIDOff)
	}
	nopts := []node.Option{
		node.WithPassthrough(f.opts.passthrough),
		node.WithLogger(f.opts.logger),
		node.WithDebug(f.opts.debug),
	}
	if f.opts.prefetch {
		m.labelPaths, m.labelRanges = labelRanges(spec.labels, f.opts.logger.With("layer", spec.digest))
	}
	if f.traces != nil {
		rec := f.traces.acquire(ref)
		nopts = append(nopts, node.WithFirstOpen(rec.Record), node.WithReadRanges(true))
		m.traced = true
		if f.opts.tracePrefetch && l.Index().PrefetchEnd() == 0 && len(m.labelPaths) == 0 {
			// A layer with no learned list of its own (prioritized region
			// or ranges label): this node's record of the image's start-up
			// order stands in for one.
			m.tracePaths, m.traceRanges = rec.Paths(), rec.Ranges()
			if len(m.tracePaths) == 0 && f.shared != nil {
				m.sharedTrace = f.shared.Start(ref, spec.labels[LabelManifestDigest])
			}
		}
	}
	if m.node, err = start(l, nopts); err != nil {
		f.releaseTrace(m)
		return nil, errors.Join(err, l.Close())
	}
	if m.traced {
		f.traces.addReads(ref, m.node)
	}
	m.fetches = f.startFetches(m)
	return m, nil
}

// willStream reports whether the layer spec asks for is going to be
// streamed for its diff_id, and so whether it keeps a spool of what reads
// fetch before (WithSpoolDir). A layer verified before is not streamed
// (verifyChain).
func (f *FS) willStream(spec mountSpec) bool {
	return f.opts.spoolDir != "" && spec.verify && !f.recordedVerified(spec.digest, spec.chain)
}

// releaseTrace hands m's last read ranges to its image's trace and saves
// it; after the unmount, so that no read is missed.
func (f *FS) releaseTrace(m *mounted) {
	if !m.traced {
		return
	}
	var src readSource
	if m.node != nil { // a typed nil would be a source
		src = m.node
	}
	f.traces.release(m.ref, src)
}

// reserve claims mountpoint for a Mount in progress.
func (f *FS) reserve(mountpoint string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.mounts[mountpoint]; ok {
		return fmt.Errorf("%s is already mounted: %w", mountpoint, errdefs.ErrAlreadyExists)
	}
	f.mounts[mountpoint] = nil
	return nil
}

func (f *FS) release(mountpoint string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.mounts[mountpoint] == nil {
		delete(f.mounts, mountpoint)
	}
}

func (f *FS) get(mountpoint string) (*mounted, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := f.mounts[mountpoint]
	if m == nil {
		return nil, fmt.Errorf("nothing mounted at %s: %w", mountpoint, errdefs.ErrNotFound)
	}
	return m, nil
}

// Check reports whether the mount at mountpoint is alive and its layer
// reachable.
func (f *FS) Check(ctx context.Context, mountpoint string, labels map[string]string) error {
	m, err := f.get(mountpoint)
	if err != nil {
		return err
	}
	var st unix.Statfs_t
	if err := unix.Statfs(mountpoint, &st); err != nil {
		return fmt.Errorf("mount %s: %w: %w", mountpoint, err, errdefs.ErrUnavailable)
	}
	if err := m.layer.Bad(); err != nil {
		return fmt.Errorf("layer at %s: %w", mountpoint, err)
	}
	if err := m.layer.Check(ctx); err != nil {
		return fmt.Errorf("layer at %s: %w", mountpoint, err)
	}
	return nil
}

// Unmount unmounts mountpoint, cancels the layer's fetches in flight and
// releases its cache holds.
func (f *FS) Unmount(ctx context.Context, mountpoint string) error {
	f.mu.Lock()
	m := f.mounts[mountpoint]
	if m == nil {
		f.mu.Unlock()
		return fmt.Errorf("nothing mounted at %s: %w", mountpoint, errdefs.ErrNotFound)
	}
	delete(f.mounts, mountpoint)
	f.mu.Unlock()
	defer f.releaseTrace(m)
	f.removeTail(mountpoint)
	return m.unmount(mountpoint)
}

// unmount cancels reads first, so that a reader blocked on the registry
// does not keep the mount busy, then unmounts; a mount still busy is
// detached and goes away when its last user does.
func (m *mounted) unmount(mountpoint string) error {
	m.fetches.stop()
	return errors.Join(m.layer.Close(), m.node.Unmount())
}

// Stats returns the counters of every mounted layer by mountpoint.
func (f *FS) Stats() map[string]layer.Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]layer.Stats, len(f.mounts))
	for mp, m := range f.mounts {
		if m != nil {
			out[mp] = m.layer.Stats()
		}
	}
	return out
}

// Close unmounts every layer and closes the cache store if the FS opened it.
func (f *FS) Close() error {
	f.libsMu.Lock()
	f.libsClosed = true
	f.libsMu.Unlock()
	f.mu.Lock()
	mounts := f.mounts
	f.mounts = map[string]*mounted{}
	f.mu.Unlock()
	var errs []error
	for mp, m := range mounts {
		if m != nil {
			errs = append(errs, m.unmount(mp))
			f.releaseTrace(m)
		}
	}
	f.libs.Wait() // they end with the layers they fetch for
	if f.traces != nil {
		f.traces.close()
	}
	if f.ahead != nil {
		f.ahead.close()
	}
	if f.ownsStore {
		errs = append(errs, f.store.Close())
	}
	return errors.Join(errs...)
}
