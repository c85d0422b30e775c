package fs

import (
	"log/slog"

	"github.com/lazysnap/lazysnap/cache"
	"github.com/lazysnap/lazysnap/fs/remote"
)

// Option configures an FS.
type Option func(*options)

type options struct {
	store           *cache.Store
	cacheDir        string
	cacheMaxBytes   int64
	resolver        *remote.Resolver
	logger          *slog.Logger
	concurrency     int
	maxRequestBytes int64
	passthrough     bool
	prefetch        bool
	debug           bool
}

// defaultOptions holds every default in one place.
func defaultOptions() options {
	return options{
		cacheDir:        "/var/lib/lazysnap/cache", // The default is /var/lib/lazysnap/cache.
		cacheMaxBytes:   10 << 30,                  // The default is 10 GiB.
		logger:          slog.Default(),
		concurrency:     4,       // The default is 4 requests at once per read.
		maxRequestBytes: 4 << 20, // The default is 4 MiB.
		passthrough:     true,    // The default uses FUSE passthrough where possible.
	}
}

// WithCache uses an open cache store, shared with the caller (who closes
// it). The default is to open one in the cache directory.
func WithCache(s *cache.Store) Option { return func(o *options) { o.store = s } }

// WithCacheDir sets where the FS opens its cache store when WithCache is
// not given. The default is /var/lib/lazysnap/cache.
func WithCacheDir(dir string) Option { return func(o *options) { o.cacheDir = dir } }

// WithCacheMaxBytes bounds the cache store the FS opens. The default is
// 10 GiB.
func WithCacheMaxBytes(n int64) Option { return func(o *options) { o.cacheMaxBytes = n } }

// WithResolver sets how layer blobs are reached. The default is
// remote.NewResolver() (containerd's hosts directory, docker credentials).
func WithResolver(r *remote.Resolver) Option { return func(o *options) { o.resolver = r } }

// WithLogger sets the logger. The default is slog.Default().
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithFetchConcurrency bounds the Range requests one read sends at once.
// The default is 4.
func WithFetchConcurrency(n int) Option { return func(o *options) { o.concurrency = n } }

// WithMaxRequestBytes caps the compressed bytes one coalesced Range request
// of a read asks for. The default is 4 MiB.
func WithMaxRequestBytes(n int64) Option { return func(o *options) { o.maxRequestBytes = n } }

// WithPassthrough sets whether completely cached files are served by the
// kernel from the cache file (FUSE passthrough). The default is true.
func WithPassthrough(on bool) Option { return func(o *options) { o.passthrough = on } }

// WithPrefetch sets whether Mount fetches a layer's prioritized files (those
// before its prefetch landmark) in the background right after mounting. The
// default is false.
func WithPrefetch(on bool) Option { return func(o *options) { o.prefetch = on } }

// WithDebug logs every FUSE request. The default is false.
func WithDebug(on bool) Option { return func(o *options) { o.debug = on } }
