package record

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/containerd/errdefs"
)

// Option configures Run.
type Option func(*options) error

type options struct {
	command  []string
	env      []string
	waitLine string
	timeout  time.Duration
	network  bool
	logger   *slog.Logger
	output   io.Writer
	runc     string
	workDir  string
	ranges   bool
}

func defaultOptions() options {
	return options{
		timeout: 10 * time.Second,
		logger:  slog.Default(),
		output:  io.Discard,
		runc:    "runc",
		ranges:  true,
	}
}

// WithCommand replaces the image's entrypoint and command with argv. The
// default is the image's entrypoint followed by its command.
func WithCommand(argv ...string) Option {
	return func(o *options) error {
		if len(argv) == 0 || argv[0] == "" {
			return fmt.Errorf("empty command: %w", errdefs.ErrInvalidArgument)
		}
		o.command = append([]string(nil), argv...)
		return nil
	}
}

// WithEnv adds KEY=VALUE variables to the image's environment, replacing
// variables of the same name. The default is the image's environment only.
func WithEnv(env ...string) Option {
	return func(o *options) error {
		for _, kv := range env {
			if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
				return fmt.Errorf("environment variable %q is not KEY=VALUE: %w", kv, errdefs.ErrInvalidArgument)
			}
		}
		o.env = append(o.env, env...)
		return nil
	}
}

// WithWaitLine stops the recording at the first line of the workload's
// output (stdout or stderr) containing text. The default is no wait line:
// the recording ends when the workload exits or the timeout passes.
func WithWaitLine(text string) Option {
	return func(o *options) error {
		o.waitLine = text
		return nil
	}
}

// WithTimeout bounds how long the workload runs. The default is 10 seconds.
func WithTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("timeout %s is not positive: %w", d, errdefs.ErrInvalidArgument)
		}
		o.timeout = d
		return nil
	}
}

// WithNetwork runs the workload in the host's network namespace, with the
// host's /etc/resolv.conf, instead of a new one holding only lo. The default
// is no network.
func WithNetwork(on bool) Option {
	return func(o *options) error {
		o.network = on
		return nil
	}
}

// WithLogger sets where progress and warnings (a workload that fails or
// never prints its wait line) are logged. The default is slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error {
		if l == nil {
			return fmt.Errorf("nil logger: %w", errdefs.ErrInvalidArgument)
		}
		o.logger = l
		return nil
	}
}

// WithOutput sets where the workload's stdout and stderr are copied. It is
// written from two goroutines, never at once. The default is io.Discard.
func WithOutput(w io.Writer) Option {
	return func(o *options) error {
		if w == nil {
			return fmt.Errorf("nil output: %w", errdefs.ErrInvalidArgument)
		}
		o.output = w
		return nil
	}
}

// WithRuntime sets the runc binary (a path, or a name looked up in $PATH).
// The default is "runc".
func WithRuntime(path string) Option {
	return func(o *options) error {
		if path == "" {
			return fmt.Errorf("empty runtime path: %w", errdefs.ErrInvalidArgument)
		}
		o.runc = path
		return nil
	}
}

// WithWorkDir sets the directory under which the image is extracted (it needs
// room for the whole uncompressed image). The default is os.TempDir().
func WithWorkDir(dir string) Option {
	return func(o *options) error {
		o.workDir = dir
		return nil
	}
}

// WithReadRanges says whether to record which parts of the image's large
// files (at least prefetchlist.RangedMinSize) the workload reads, in
// Trace.Ranges. They are learned from the page cache: the pages of the
// extracted files are dropped before the run, and those resident after it
// were read, by the workload or by the kernel's read-ahead for it (so the
// ranges are page aligned and somewhat wider than the reads). A file whose
// pages cannot be dropped (a work dir on tmpfs), that the workload wrote,
// or of which no page was read gets no ranges and is taken whole. The
// default is on.
func WithReadRanges(on bool) Option {
	return func(o *options) error {
		o.ranges = on
		return nil
	}
}
