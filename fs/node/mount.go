package node

import (
	"fmt"
	"log"
	"log/slog"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/lazysnap/lazysnap/fs/index"
	"github.com/lazysnap/lazysnap/fs/layer"
)

// Option configures a mount.
type Option func(*options)

type options struct {
	passthrough  bool
	timeout      time.Duration
	maxReadAhead int
	allowOther   bool
	debug        bool
	logger       *slog.Logger
	firstOpen    func(path string)
}

// defaultOptions holds every default in one place.
func defaultOptions() options {
	return options{
		passthrough:  true,      // The default is to use passthrough where the kernel allows it.
		timeout:      time.Hour, // The default is one hour: layers never change.
		maxReadAhead: 1 << 20,   // The default is 1 MiB.
		allowOther:   true,      // The default lets every user (and containers) read the mount.
		logger:       slog.Default(),
	}
}

// WithPassthrough sets whether files the cache holds completely are read by
// the kernel directly from the cache file (FUSE passthrough; needs root and
// a kernel with CONFIG_FUSE_PASSTHROUGH, else plain reads are used). The
// default is true.
func WithPassthrough(on bool) Option { return func(o *options) { o.passthrough = on } }

// WithTimeout sets how long the kernel caches entries, negative lookups and
// attributes. The default is one hour.
func WithTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// WithMaxReadAhead sets the kernel's read-ahead for the mount. The default
// is 1 MiB.
func WithMaxReadAhead(n int) Option { return func(o *options) { o.maxReadAhead = n } }

// WithAllowOther sets whether users other than the mounter may access the
// mount. The default is true.
func WithAllowOther(on bool) Option { return func(o *options) { o.allowOther = on } }

// WithDebug logs every FUSE request. The default is false.
func WithDebug(on bool) Option { return func(o *options) { o.debug = on } }

// WithFirstOpen calls fn once per regular file of the mount, the first time
// it is opened, with its absolute path in the layer (one of its names, for
// a hardlinked file). fn must be quick: the open waits for it. The default
// is nil (nothing is called).
func WithFirstOpen(fn func(path string)) Option { return func(o *options) { o.firstOpen = fn } }

// WithLogger sets the logger. The default is slog.Default().
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// Mount mounts l read-only at mountpoint and returns once the kernel serves
// it. Unmount with the returned server's Unmount.
func Mount(mountpoint string, l *layer.Layer, opts ...Option) (*fuse.Server, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	t := &tree{layer: l, idx: l.Index(), passthrough: o.passthrough, logger: o.logger}
	if o.firstOpen != nil {
		t.opened = newOpenedSet(l.Index().Len(), o.firstOpen)
	}
	root := &dirNode{base: base{t: t, id: index.Root}}
	timeout := o.timeout
	server, err := gofs.Mount(mountpoint, root, &gofs.Options{
		MountOptions: fuse.MountOptions{
			AllowOther:   o.allowOther,
			FsName:       "lazysnap:" + l.Digest().Encoded()[:12],
			Name:         "lazysnap",
			Options:      []string{"default_permissions"},
			MaxReadAhead: o.maxReadAhead,
			// As root we mount without fusermount. Read-only, but devices
			// and set-user-ID files of the image keep working.
			DirectMount:          true,
			DirectMountFlags:     syscall.MS_RDONLY,
			EnableSymlinkCaching: true,
			MaxBackground:        64,
			Debug:                o.debug,
			Logger:               log.New(slogWriter{o.logger}, "", 0),
		},
		EntryTimeout:    &timeout,
		AttrTimeout:     &timeout,
		NegativeTimeout: &timeout,
		NullPermissions: true, // report modes exactly as the TOC has them
		RootStableAttr:  &gofs.StableAttr{Ino: 1},
	})
	if err != nil {
		return nil, fmt.Errorf("mounting layer %s at %s: %w", l.Digest(), mountpoint, err)
	}
	return server, nil
}

// slogWriter sends go-fuse's log lines to slog.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.l.Debug(string(p))
	return len(p), nil
}
