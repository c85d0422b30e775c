package node

import (
	"fmt"
	"log"
	"log/slog"
	"os"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

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
	readRanges   bool
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

// WithReadRanges records which chunks of the mount's large files (see
// RangedMinSize) are read, for Mounted.ReadRanges. It costs a read one
// binary search over the file's chunks and an atomic load per chunk. The
// default is false.
func WithReadRanges(on bool) Option { return func(o *options) { o.readRanges = on } }

// WithLogger sets the logger. The default is slog.Default().
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// Mount mounts l read-only at mountpoint and returns once the kernel serves
// it.
func Mount(mountpoint string, l *layer.Layer, opts ...Option) (*Mounted, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	mo := mountOptions(l, o)
	if os.Geteuid() == 0 {
		small := mo
		smallRequestBuffers(&small)
		m, err := mountTree(mountpoint, l, o, small)
		if err == nil {
			m.small = true
			return m, nil
		}
		// Mount as before, fusermount included, with go-fuse's buffers.
		o.logger.Debug("direct mount failed; retrying", "mountpoint", mountpoint, "error", err)
	}
	m, err := mountTree(mountpoint, l, o, mo)
	if err != nil {
		return nil, fmt.Errorf("mounting layer %s at %s: %w", l.Digest(), mountpoint, err)
	}
	return m, nil
}

func mountOptions(l *layer.Layer, o options) fuse.MountOptions {
	return fuse.MountOptions{
		AllowOther:   o.allowOther,
		FsName:       "lazysnap:" + l.Digest().Encoded()[:12],
		Name:         "lazysnap",
		Options:      []string{"default_permissions"},
		MaxReadAhead: o.maxReadAhead,
		// As root we mount without fusermount: read-only, nosuid and
		// nodev, so that no one reaching the mount itself can run an
		// image's set-user-ID programs or open its devices. Containers
		// keep them: overlayfs checks its own mount's flags, not its
		// lower dirs', and containerd's read-only remount of a bind
		// mount (a view of one layer) drops them outside a user
		// namespace (TestSetuidAndDevicesLikeOverlayfs,
		// integration's TestSetuidAndDevicesInContainers).
		DirectMount:          true,
		DirectMountFlags:     syscall.MS_RDONLY | syscall.MS_NOSUID | syscall.MS_NODEV,
		EnableSymlinkCaching: true,
		MaxBackground:        64,
		Debug:                o.debug,
		Logger:               log.New(slogWriter{o.logger}, "", 0),
	}
}

// mountTree serves l at mountpoint with fresh handles and open modes.
func mountTree(mountpoint string, l *layer.Layer, o options, mo fuse.MountOptions) (*Mounted, error) {
	modes, err := newIOModes(l.Index().Len())
	if err != nil {
		return nil, err
	}
	m := newMounted(mountpoint, l, o, modes)
	server, err := fuse.NewServer(m.raw, mountpoint, &mo)
	if err != nil {
		modes.close()
		return nil, err
	}
	go server.Serve()
	if err := server.WaitMount(); err != nil {
		modes.close()
		return nil, err
	}
	m.server = server
	return m, nil
}

// maxReadBytes is the largest READ the kernel sends: 128 KiB, the size the
// kernel uses by default and go-fuse negotiated before smallRequestBuffers.
const maxReadBytes = 128 << 10

// smallRequestBuffers shrinks the buffers go-fuse reads kernel requests
// into, without shrinking reads.
//
// go-fuse sizes each request buffer for the largest WRITE (MaxWrite, 128 KiB
// by default) and keeps one per reader goroutine, up to three per mount even
// when idle: about 400 KiB a mount. A read-only mount never receives a WRITE
// (nor a SETXATTR, the other request with a large payload), so the kernel's
// minimum max_write of 4 KiB suffices, which makes the buffers 12 KiB; a
// request that did not fit would fail with EIO, not hang. But go-fuse also
// derives the READ size from MaxWrite, twice: the max_read mount option and
// the max_pages of INIT. So max_read is given again after go-fuse's own (the
// last one wins) and max_pages is left to the kernel, whose default is 32
// pages. fusermount would put go-fuse's max_read last: the mount must be
// direct, hence root.
func smallRequestBuffers(mo *fuse.MountOptions) {
	mo.DirectMountStrict = true
	mo.MaxWrite = 4096
	mo.Options = append(mo.Options, fmt.Sprintf("max_read=%d", maxReadBytes))
	mo.DisabledCapabilities |= fuse.CAP_MAX_PAGES
}

// slogWriter sends go-fuse's log lines to slog.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.l.Debug(string(p))
	return len(p), nil
}
