package snapshot

import (
	"io"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Option configures a Snapshotter.
type Option func(*options)

type options struct {
	logger       *slog.Logger
	registerer   prometheus.Registerer
	mountOptions []string
	forget       Forgetter

	restoreConcurrency int
	restoreTimeout     time.Duration
	restoreRetry       time.Duration
}

// After a restart, remote layers are mounted again DefaultRestoreConcurrency
// at a time, each given DefaultRestoreTimeout, and those that failed are
// tried again every DefaultRestoreRetry (see WithRestore).
const (
	DefaultRestoreConcurrency = 8
	DefaultRestoreTimeout     = 60 * time.Second
	DefaultRestoreRetry       = 30 * time.Second
)

// defaultOptions holds every default of the package in one place.
func defaultOptions() options {
	return options{
		logger:             slog.New(slog.NewTextHandler(io.Discard, nil)),
		registerer:         nil,
		mountOptions:       nil,
		restoreConcurrency: DefaultRestoreConcurrency,
		restoreTimeout:     DefaultRestoreTimeout,
		restoreRetry:       DefaultRestoreRetry,
	}
}

// WithLogger sets the logger for mount, fallback and restore events.
// The default is a logger that discards everything.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.logger = l }
}

// WithRegisterer registers the snapshotter's metrics (fallbacks by reason,
// remote mounts) on r. The default is nil: metrics are counted but not
// exported.
func WithRegisterer(r prometheus.Registerer) Option {
	return func(o *options) { o.registerer = r }
}

// WithMountOptions adds options to every overlay mount the snapshotter
// returns (not to bind mounts). The default is none, plus "index=off" when
// the kernel knows that option, as containerd's overlay snapshotter does.
func WithMountOptions(opts ...string) Option {
	return func(o *options) { o.mountOptions = append(o.mountOptions, opts...) }
}

// WithForgetter sets how a bad remote layer is dropped from containerd's
// metadata (see QuarantineBad). The default is nil: bad layers are
// withdrawn from reuse here only, and containerd keeps offering the chain
// ID until an operator removes it (`ctr snapshots rm`).
func WithForgetter(f Forgetter) Option {
	return func(o *options) { o.forget = f }
}

// WithRestore sets how remote layers are mounted again after a restart:
// concurrency layers at once, each within timeout, and a layer that could
// not be mounted tried again by RetryRestore at most every retry. The
// default is 8 at once, 60s each, again every 30s.
func WithRestore(concurrency int, timeout, retry time.Duration) Option {
	return func(o *options) {
		o.restoreConcurrency, o.restoreTimeout, o.restoreRetry = max(1, concurrency), timeout, retry
	}
}
