package bench

import (
	"io"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/lazysnap/lazysnap/internal/testenv"
)

// options configure a Suite; every default is in defaultOptions.
type options struct {
	rateBits       int64
	delay          time.Duration
	reps           int
	workloads      []Workload
	modes          []Mode
	externalSocket string
	baselineBin    string
	baselineConfig string
	cacheDir       string
	settleQuiet    time.Duration
	settleCap      time.Duration
	readyTimeout   time.Duration
	freshDisks     bool
	requestLog     bool
	diskDir        string
	logDir         string
	logger         *slog.Logger
}

// Option configures New.
type Option func(*options)

func defaultOptions() options {
	return options{
		rateBits:     200_000_000,
		delay:        20 * time.Millisecond,
		reps:         3,
		workloads:    DefaultWorkloads()[:1],
		modes:        DefaultModes(),
		cacheDir:     filepath.Join(testenv.CacheDir(), "bench", "conversions"),
		settleQuiet:  3 * time.Second,
		settleCap:    120 * time.Second,
		readyTimeout: 5 * time.Minute,
		freshDisks:   true, // The default gives each case a file system of its own (see freshDisk).
		diskDir:      diskDir(),
		logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

// WithRequestLog sets whether each result lists its case's blob GETs
// with their times and sizes (Result.Requests), to see where a start-up
// waits. The default is false.
func WithRequestLog(on bool) Option { return func(o *options) { o.requestLog = on } }

// WithLogDir keeps the logs of each lazysnap case's serve and fused, at
// log level debug, in dir/WORKLOAD/MODE/repN (and those of the scratch
// node that records a trace in dir/WORKLOAD/trace-recording): with the
// request log, they show where a pull waits. The default keeps none.
func WithLogDir(dir string) Option { return func(o *options) { o.logDir = dir } }

// WithFreshDisks sets whether each case's node keeps its state on a file
// system made for it (see freshDisk). The default is true.
func WithFreshDisks(on bool) Option { return func(o *options) { o.freshDisks = on } }

// WithRate sets the link rate in bits per second. The default is 200 Mbit/s.
func WithRate(bitsPerSecond int64) Option { return func(o *options) { o.rateBits = bitsPerSecond } }

// WithDelay sets the delay added to each registry request. The default is
// 20ms.
func WithDelay(d time.Duration) Option { return func(o *options) { o.delay = d } }

// WithReps sets the number of repetitions of each case. The default is 3.
func WithReps(n int) Option { return func(o *options) { o.reps = n } }

// WithWorkloads sets the images and workloads. The default is the first of
// DefaultWorkloads (python3 importing numpy).
func WithWorkloads(ws ...Workload) Option { return func(o *options) { o.workloads = ws } }

// WithModes sets the modes. The default is DefaultModes.
func WithModes(ms ...Mode) Option { return func(o *options) { o.modes = ms } }

// WithExternalSnapshotter adds the External mode: the plain eStargz image on
// the proxy snapshotter serving socket (not restarted nor emptied between
// cases). The default is none.
func WithExternalSnapshotter(socket string) Option {
	return func(o *options) { o.externalSocket = socket }
}

// WithBaselineLazysnap adds the Baseline mode: the plain eStargz image on
// the lazysnap binary at path (its `lazysnap fused` too), started fresh per
// case like the Lazy mode. The default is none.
func WithBaselineLazysnap(path string) Option {
	return func(o *options) { o.baselineBin = path }
}

// WithBaselineConfig appends toml to the Baseline mode's lazysnap config,
// so that two settings of one build can be compared side by side (give
// this build as the baseline binary). The default is "".
func WithBaselineConfig(toml string) Option {
	return func(o *options) { o.baselineConfig = toml }
}

// WithCacheDir sets where conversions are kept between runs. The default
// is bench/conversions under testenv.CacheDir().
func WithCacheDir(dir string) Option { return func(o *options) { o.cacheDir = dir } }

// WithSettle sets how long the registry must be quiet after ready for the
// totals (background fetch done), and the cap on that wait. The default is
// 3s quiet, capped at 120s.
func WithSettle(quiet, limit time.Duration) Option {
	return func(o *options) { o.settleQuiet, o.settleCap = quiet, limit }
}

// WithReadyTimeout bounds the wait from task start to the ready signal; a
// case that is not ready by then fails. The default is 5 minutes.
func WithReadyTimeout(d time.Duration) Option { return func(o *options) { o.readyTimeout = d } }

// WithLogger sets where progress goes. The default discards it.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }
