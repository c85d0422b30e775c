// Package fusedproc finds the `lazysnap fused` process that holds the FUSE
// mounts, or starts one, and waits until it answers. fused is a separate,
// long-lived process so that a restart or crash of `lazysnap serve` never
// drops a FUSE connection a running container reads from (docs/design.md);
// this package is serve's side of that arrangement, and internal/fused the
// protocol both speak.
package fusedproc

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/containerd/errdefs"

	"github.com/lazysnap/lazysnap/internal/fused"
)

// Option configures Ensure.
type Option func(*options)

type options struct {
	logFile      string
	startTimeout time.Duration
	pollInterval time.Duration
	logger       *slog.Logger
	died         <-chan struct{}
}

// defaultOptions holds every default in one place.
func defaultOptions() options {
	return options{
		logFile:      os.DevNull,            // The default discards fused's output.
		startTimeout: 30 * time.Second,      // The default is 30 s.
		pollInterval: 50 * time.Millisecond, // The default is 50 ms.
		logger:       slog.Default(),        // The default is slog.Default().
	}
}

// WithLogFile appends the output of a fused Ensure starts to path, created
// 0600. A file, not a pipe: a pipe to serve would break when serve dies. The
// default is /dev/null.
func WithLogFile(path string) Option { return func(o *options) { o.logFile = path } }

// WithStartTimeout bounds how long Ensure waits for a fused it started to
// answer; mounting nothing, it normally answers within milliseconds. The
// default is 30 s.
func WithStartTimeout(d time.Duration) Option { return func(o *options) { o.startTimeout = d } }

// WithPollInterval sets how often Ensure asks a starting fused whether it
// is up. The default is 50 ms.
func WithPollInterval(d time.Duration) Option { return func(o *options) { o.pollInterval = d } }

// WithDied gives Supervise a channel on which the caller reports that fused
// is gone (it saw fused's end of a connection close): Supervise then starts
// it again after one failed check instead of two, at once instead of at
// the next interval. The default is nil (only the checks count).
func WithDied(ch <-chan struct{}) Option { return func(o *options) { o.died = ch } }

// WithLogger sets the logger. The default is slog.Default().
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// Ensure returns a client of the fused answering on socket. When none
// answers it starts argv (which must serve fused's protocol on socket) and
// waits until it does. It fails with errdefs.ErrUnavailable when the
// started process exits first, and with context.DeadlineExceeded when it
// does not answer within the start timeout.
func Ensure(ctx context.Context, socket string, argv []string, opts ...Option) (*fused.Client, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	c := newClient(socket)
	if err := c.Healthz(ctx); err == nil {
		o.logger.InfoContext(ctx, "using running fused", "socket", socket)
		return c, nil
	}
	exited, err := start(argv, o.logFile)
	if err != nil {
		return nil, err
	}
	if err := wait(ctx, c, exited, o); err != nil {
		return nil, fmt.Errorf("fused did not come up (see %s): %w", o.logFile, err)
	}
	o.logger.InfoContext(ctx, "started fused", "socket", socket, "log", o.logFile)
	return c, nil
}

func newClient(socket string) *fused.Client { return fused.NewClient(socket) }

// start starts argv in its own session, so neither a SIGKILL of serve nor
// a signal to serve's process group reaches it, with its output appended
// to logFile. The channel yields the process's exit.
func start(argv []string, logFile string) (<-chan error, error) {
	if len(argv) == 0 {
		return nil, fmt.Errorf("starting fused: no command: %w", errdefs.ErrInvalidArgument)
	}
	out, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening fused log: %w", err)
	}
	defer out.Close() // the child has its own copy
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting fused: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }() // reaps it if it dies while serve runs
	return exited, nil
}

// wait polls c until fused answers, exits, or the start timeout passes.
func wait(ctx context.Context, c *fused.Client, exited <-chan error, o options) error {
	ctx, cancel := context.WithTimeout(ctx, o.startTimeout)
	defer cancel()
	tick := time.NewTicker(o.pollInterval)
	defer tick.Stop()
	for {
		if err := c.Healthz(ctx); err == nil {
			return nil
		}
		select {
		case err := <-exited:
			return fmt.Errorf("fused exited: %v: %w", err, errdefs.ErrUnavailable)
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}
