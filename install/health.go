package install

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/core/snapshots/proxy"
	"github.com/containerd/errdefs"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/lazysnap/lazysnap/internal/fused"
)

// healthProbeKey is a snapshot key no one creates: asking for it makes the
// snapshotter look it up in its metadata store and answer "not found".
const healthProbeKey = "lazysnap-health-probe"

// CheckHealth reports whether lazysnap answers on socket the way containerd
// will ask it: through containerd's own snapshots proxy client, with a Stat
// that reaches its metadata store. (A Walk is no good: containerd's snapshot
// store answers "not found" on an empty store.) The probes of the DaemonSet and `lazysnap-install health` use
// it; ctx bounds how long it may take.
func CheckHealth(ctx context.Context, socket string) error {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("dialing lazysnap at %s: %w: %w", socket, errdefs.ErrUnavailable, err)
	}
	defer conn.Close()
	sn := proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), ProxyPluginName)
	_, err = sn.Stat(ctx, healthProbeKey)
	if err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("asking snapshots from lazysnap at %s: %w: %w", socket, errdefs.ErrUnavailable, err)
	}
	return nil
}

// CheckFusedHealth reports whether the `lazysnap fused` process holding the
// FUSE mounts answers /healthz on its socket (ROOT/fused.sock).
func CheckFusedHealth(ctx context.Context, socket string) error {
	if err := fused.NewClient(socket).Healthz(ctx); err != nil {
		return fmt.Errorf("asking lazysnap fused at %s: %w", socket, err)
	}
	return nil
}

// DefaultHealthGrace is how long a process that answered before may stay
// silent before Health reports it: serve notices a dead fused within two
// watch intervals (5 s each by default) and starts it again, and the
// installer's supervisor restarts serve after a backoff of up to 30 s.
const DefaultHealthGrace = 45 * time.Second

// HealthOption configures a Health.
type HealthOption func(*healthOptions)

type healthOptions struct {
	grace time.Duration
	now   func() time.Time
}

func defaultHealthOptions() healthOptions {
	return healthOptions{grace: DefaultHealthGrace, now: time.Now}
}

// WithHealthGrace sets how long a process that answered before may fail
// before the check fails. The default is DefaultHealthGrace.
func WithHealthGrace(d time.Duration) HealthOption {
	return func(o *healthOptions) { o.grace = d }
}

// withHealthClock replaces the clock, for tests.
func withHealthClock(now func() time.Time) HealthOption {
	return func(o *healthOptions) { o.now = now }
}

// Health checks both of lazysnap's processes, serve (containerd's snapshot
// API) and fused (the FUSE mounts), for the DaemonSet's probes. A process
// that never answered fails at once, so a node is not ready before lazysnap
// is; one that answered before fails only after it has been silent for the
// grace period, so the probes do not flap while serve restarts fused or the
// supervisor restarts serve. It is safe for concurrent use.
type Health struct {
	opts   healthOptions
	checks []healthCheck

	mu    sync.Mutex
	state map[string]*healthState
}

type healthCheck struct {
	name string
	fn   func(context.Context) error
}

type healthState struct {
	answered  bool      // answered at least once
	downSince time.Time // zero while answering
}

// NewHealth returns a Health checking serve on socket and fused on
// fusedSocket; an empty fusedSocket checks serve only (fuse_manager off).
func NewHealth(socket, fusedSocket string, opts ...HealthOption) *Health {
	o := defaultHealthOptions()
	for _, opt := range opts {
		opt(&o)
	}
	h := &Health{opts: o, state: map[string]*healthState{}}
	h.checks = append(h.checks, healthCheck{"serve", func(ctx context.Context) error { return CheckHealth(ctx, socket) }})
	if fusedSocket != "" {
		h.checks = append(h.checks, healthCheck{"fused", func(ctx context.Context) error { return CheckFusedHealth(ctx, fusedSocket) }})
	}
	return h
}

// Check asks every process and returns the errors of those that never
// answered or have been failing for longer than the grace period; the error
// wraps errdefs.ErrUnavailable.
func (h *Health) Check(ctx context.Context) error {
	errs := make([]error, len(h.checks))
	var wg sync.WaitGroup
	for i, c := range h.checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.fn(ctx)
		}()
	}
	wg.Wait()
	var failing []error
	for i, c := range h.checks {
		if err := h.judge(c.name, errs[i]); err != nil {
			failing = append(failing, err)
		}
	}
	return errors.Join(failing...)
}

// judge records the outcome of one process's check and says whether it
// counts as a failure.
func (h *Health) judge(name string, err error) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.state[name]
	if s == nil {
		s = &healthState{}
		h.state[name] = s
	}
	now := h.opts.now()
	if err == nil {
		s.answered, s.downSince = true, time.Time{}
		return nil
	}
	if s.downSince.IsZero() {
		s.downSince = now
	}
	if !s.answered {
		return fmt.Errorf("%s has not answered yet: %w", name, err)
	}
	if down := now.Sub(s.downSince); down >= h.opts.grace {
		return fmt.Errorf("%s has not answered for %s: %w: %w", name, down.Round(time.Second), errdefs.ErrUnavailable, err)
	}
	return nil
}
