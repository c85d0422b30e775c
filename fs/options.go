package fs

import (
	"log/slog"
	"time"

	"github.com/lazysnap/lazysnap/cache"
	"github.com/lazysnap/lazysnap/fs/layer"
	"github.com/lazysnap/lazysnap/fs/remote"
)

// Option configures an FS.
type Option func(*options)

type options struct {
	store          *cache.Store
	cacheDir       string
	cacheOpts      []cache.Option // given to the store the FS opens; the cache package holds their defaults
	resolver       *remote.Resolver
	logger         *slog.Logger
	layerOpts      []layer.Option // given to every layer; package layer holds their defaults
	passthrough    bool
	prefetch       bool
	tracePrefetch  bool
	traceShared    bool
	prefetchWait   time.Duration
	background     bool
	backgroundRate int64
	schedOpts      []layer.SchedulerOption // package layer holds their defaults
	traceDir       string
	traceMaxFiles  int
	traceFlush     time.Duration
	debug          bool
	verifyDiffID   bool
	verifiedDir    string
	tocTailDir     string
	spoolDir       string
	tocAhead       bool
	libraries      bool
}

// DefaultTraceMaxFiles is the default of WithTraceMaxFiles; the daemon's
// configuration shows it (cmd/lazysnap reads it rather than repeating it).
const DefaultTraceMaxFiles = 10000

// defaultOptions holds every default in one place. The cache's and the
// layers' settings are not here: they are passed on only when set, so that
// each default lives in the package that uses it.
func defaultOptions() options {
	return options{
		cacheDir:      "/var/lib/lazysnap/cache", // The default is /var/lib/lazysnap/cache.
		logger:        slog.Default(),
		passthrough:   true,                 // The default uses FUSE passthrough where possible.
		prefetchWait:  0,                    // The default is not to wait.
		traceMaxFiles: DefaultTraceMaxFiles, // The default is 10000 files per image.
		traceFlush:    10 * time.Second,     // The default is 10 seconds.
		verifyDiffID:  true,                 // The default verifies.
		tracePrefetch: true,                 // The default prefetches by the saved trace.
		tocAhead:      true,                 // The default reads the next layers' TOCs ahead.
		traceShared:   true,                 // The default looks for a trace another node shared.
		libraries:     true,                 // The default fetches the libraries a binary needs as it starts.
	}
}

// WithCache uses an open cache store, shared with the caller (who closes
// it). The default is to open one in the cache directory.
func WithCache(s *cache.Store) Option { return func(o *options) { o.store = s } }

// WithTOCTailDir keeps, per mounted layer, the ranges of its blob that
// reading its TOC fetched, in dir, so that a layer handed over (Resume) is
// built again without the registry. The default is "" (not kept: Resume
// reads the TOC from the registry).
func WithTOCTailDir(dir string) Option { return func(o *options) { o.tocTailDir = dir } }

// WithCacheDir sets where the FS opens its cache store when WithCache is
// not given. The default is /var/lib/lazysnap/cache.
func WithCacheDir(dir string) Option { return func(o *options) { o.cacheDir = dir } }

// WithCacheMaxBytes bounds the cache store the FS opens (see
// cache.WithMaxBytes). The default is the cache's, cache.DefaultMaxBytes
// (10 GiB).
func WithCacheMaxBytes(n int64) Option {
	return func(o *options) { o.cacheOpts = append(o.cacheOpts, cache.WithMaxBytes(n)) }
}

// WithResolver sets how layer blobs are reached. The default is
// remote.NewResolver() (containerd's hosts directory, docker credentials).
func WithResolver(r *remote.Resolver) Option { return func(o *options) { o.resolver = r } }

// WithLogger sets the logger. The default is slog.Default().
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithFetchConcurrency bounds the Range requests one read sends at once
// (see layer.WithConcurrency). The default is the layer's,
// layer.DefaultConcurrency (4).
func WithFetchConcurrency(n int) Option { return withLayerOption(layer.WithConcurrency(n)) }

// WithMaxRequestBytes caps the compressed bytes one coalesced Range request
// of a read asks for (see layer.WithMaxRequestBytes). The default is the
// layer's, layer.DefaultMaxRequestBytes (4 MiB).
func WithMaxRequestBytes(n int64) Option { return withLayerOption(layer.WithMaxRequestBytes(n)) }

// WithReadAhead sets how many compressed bytes a read that misses also
// fetches past its own chunks, to bring the uncached files stored next in
// the layer (see layer.WithReadAhead); 0 disables it. The default is the
// layer's, layer.DefaultReadAheadBytes (4 MiB).
func WithReadAhead(n int64) Option { return withLayerOption(layer.WithReadAhead(n)) }

func withLayerOption(lo layer.Option) Option {
	return func(o *options) { o.layerOpts = append(o.layerOpts, lo) }
}

// WithReadTimeout bounds how long a read waits for the chunks it lacks
// before it fails with EIO (see layer.WithReadTimeout); 0 is the layer's
// default. The default is the layer's, layer.DefaultReadTimeout (30s).
func WithReadTimeout(d time.Duration) Option { return withLayerOption(layer.WithReadTimeout(d)) }

// WithPassthrough sets whether completely cached files are served by the
// kernel from the cache file (FUSE passthrough). The default is true.
func WithPassthrough(on bool) Option { return func(o *options) { o.passthrough = on } }

// WithPrefetch sets whether Mount fetches a layer's prioritized files (those
// before its prefetch landmark) in the background right after mounting. The
// default is false.
func WithPrefetch(on bool) Option { return func(o *options) { o.prefetch = on } }

// WithTracePrefetch sets whether, with WithPrefetch and WithTraceDir, a
// layer that has no prioritized region prefetches instead the files the
// image opened first the last time it ran on this node (its saved trace),
// as if the image had been converted with that list. The default is true.
func WithTracePrefetch(on bool) Option { return func(o *options) { o.tracePrefetch = on } }

// WithTraceFromRegistry sets whether, with WithTracePrefetch, a layer for
// whose image this node has no saved trace yet prefetches by the newest
// trace another node pushed to the image's repository (`lazysnap trace
// export --push`; package fs/sharedtrace). The registry is asked once per
// image, with the resolver's credentials (remote.Resolver.Keychain), while
// the mount goes on; the prefetch waits for the answer at most 5 seconds.
// The default is true.
func WithTraceFromRegistry(on bool) Option { return func(o *options) { o.traceShared = on } }

// WithPrefetchWait sets how long Mount waits for the layer's prefetch to
// finish before returning anyway (0: Mount returns as soon as the layer is
// mounted, and reads of files still being prefetched are served on their
// own). See docs/design.md, "Prefetch and background fetch". The default is
// 0.
func WithPrefetchWait(d time.Duration) Option { return func(o *options) { o.prefetchWait = max(0, d) } }

// WithBackgroundFetch sets whether, after a layer's prefetch (or right after
// mount without one), the rest of the layer is fetched into the cache at
// background priority, so the node ends with the whole image local. Reads
// and prefetches always go first. The default is false.
func WithBackgroundFetch(on bool) Option { return func(o *options) { o.background = on } }

// WithBackgroundBytesPerSecond caps the bandwidth of background fetching
// over every layer of the FS; 0 is no cap. The default is 0.
func WithBackgroundBytesPerSecond(n int64) Option { return func(o *options) { o.backgroundRate = n } }

// WithBackgroundQuietPeriod sets how long reads must have paused before a
// background request starts (layer.WithQuietPeriod). The default is the
// layer package's, 500 ms.
func WithBackgroundQuietPeriod(d time.Duration) Option {
	return func(o *options) { o.schedOpts = append(o.schedOpts, layer.WithQuietPeriod(d)) }
}

// WithBackgroundDuringReads sets whether background requests run while
// reads do (layer.WithDuringReads). The default is the layer package's,
// false.
func WithBackgroundDuringReads(on bool) Option {
	return func(o *options) { o.schedOpts = append(o.schedOpts, layer.WithDuringReads(on)) }
}

// WithBackgroundYield makes background work wait while the node's other
// processes leave fewer than minFreeCores cores free, at most maxYield in a
// row (layer.WithYieldToBusyNode). The default is not to look at the node.
func WithBackgroundYield(load layer.NodeLoad, minFreeCores float64, maxYield time.Duration) Option {
	return func(o *options) {
		o.schedOpts = append(o.schedOpts, layer.WithYieldToBusyNode(load, minFreeCores, maxYield))
	}
}

// WithBackgroundRequestBytes caps one background request
// (layer.WithBackgroundRequestBytes). The default is the layer package's,
// 2 MiB.
func WithBackgroundRequestBytes(n int64) Option {
	return func(o *options) { o.schedOpts = append(o.schedOpts, layer.WithBackgroundRequestBytes(n)) }
}

// WithTraceDir records, per image (its image-ref label), the order in which
// files are first opened after mount, and keeps it in dir as one prefetch
// list per image (see package fs/trace), saved every few seconds and when
// the image's last layer is unmounted. "" records nothing. The default is
// "".
func WithTraceDir(dir string) Option { return func(o *options) { o.traceDir = dir } }

// WithTraceMaxFiles bounds the files recorded per image. The default is
// 10000.
func WithTraceMaxFiles(n int) Option { return func(o *options) { o.traceMaxFiles = n } }

// WithTraceFlushInterval sets how often changed traces are saved. The
// default is 10 seconds.
func WithTraceFlushInterval(d time.Duration) Option { return func(o *options) { o.traceFlush = d } }

// WithDebug logs every FUSE request. The default is false.
func WithDebug(on bool) Option { return func(o *options) { o.debug = on } }

// WithVerifyDiffID sets whether a layer mounted with chain labels (see
// LabelChainID) is streamed whole in the background once, right after its
// prefetch, to check that it decompresses to the diff_id its chain ID
// promises; a layer that does not is marked bad and its reads fail. The
// stream also fills the cache, so it stands in for most of the background
// fetch; with WithBackgroundFetch off it still runs. The default is true.
func WithVerifyDiffID(on bool) Option { return func(o *options) { o.verifyDiffID = on } }

// WithVerifiedDir keeps a record per verified layer in dir, so that a layer
// mounted again (after a restart) is not streamed again. "" keeps none. The
// default is "".
func WithVerifiedDir(dir string) Option { return func(o *options) { o.verifiedDir = dir } }

// WithSpoolDir keeps, for each layer waiting for its diff_id stream (see
// WithVerifyDiffID), the compressed bytes reads and prefetches fetch ahead
// of the stream in an unlinked file in dir, so that the stream takes them
// from there instead of fetching them again (see layer.WithSpoolDir). The
// file shrinks as the stream passes and goes when it ends. "" keeps none:
// the stream fetches the whole blob. The default is "".
func WithSpoolDir(dir string) Option { return func(o *options) { o.spoolDir = dir } }

// WithTOCReadAhead sets whether the Mount of an image's layer starts
// reading the TOCs of the image's next layers (the LabelImageLayers label)
// in the background, so that their Mounts find them read and only check
// their digest. The default is on.
func WithTOCReadAhead(on bool) Option { return func(o *options) { o.tocAhead = on } }

// WithLibraryPrefetch sets whether the first read of a binary's head
// fetches, side by side, the first chunk of each shared library it needs
// (its ELF DT_NEEDED entries, looked up where the dynamic loader looks, in
// the layers of the same image), before the loader opens them one after
// another. The default is true.
func WithLibraryPrefetch(on bool) Option { return func(o *options) { o.libraries = on } }
