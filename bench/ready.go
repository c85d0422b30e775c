package bench

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// lineWatcher is the container's stdout: it closes ready at the first line
// containing want, and keeps the last output for error messages.
type lineWatcher struct {
	want  string
	ready chan struct{}

	mu      sync.Mutex
	partial []byte
	seen    bool
	last    []string
}

func newLineWatcher(want string) *lineWatcher {
	return &lineWatcher{want: want, ready: make(chan struct{})}
}

func (w *lineWatcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			return len(p), nil
		}
		w.line(string(w.partial[:i]))
		w.partial = w.partial[i+1:]
	}
}

func (w *lineWatcher) line(s string) {
	w.last = append(w.last, s)
	if len(w.last) > 10 {
		w.last = w.last[1:]
	}
	if w.want != "" && !w.seen && strings.Contains(s, w.want) {
		w.seen = true
		close(w.ready)
	}
}

// output returns the last lines seen, for an error message.
func (w *lineWatcher) output() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.last, "\n") + string(w.partial)
}

// probeInterval is the pause between two failed probes; each probe is a
// runc exec, itself tens of milliseconds.
const probeInterval = 50 * time.Millisecond

// probeUntilReady execs probe in the task until it exits 0.
func probeUntilReady(ctx context.Context, c client.Container, task client.Task, probe []string) error {
	spec, err := c.Spec(ctx)
	if err != nil {
		return fmt.Errorf("reading spec: %w", err)
	}
	for i := 0; ; i++ {
		pspec := *spec.Process
		pspec.Args = probe
		ok, err := execOnce(ctx, task, fmt.Sprintf("probe-%d", i), &pspec)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(probeInterval):
		}
	}
}

// execOnce runs one probe; a probe that cannot start counts as failed (the
// container may not be far enough yet), a failure of containerd does not.
func execOnce(ctx context.Context, task client.Task, id string, pspec *specs.Process) (bool, error) {
	p, err := task.Exec(ctx, id, pspec, cio.NullIO)
	if err != nil {
		return false, fmt.Errorf("exec probe: %w", err)
	}
	defer func() { _, _ = p.Delete(context.WithoutCancel(ctx)) }()
	exited, err := p.Wait(ctx)
	if err != nil {
		return false, fmt.Errorf("waiting for probe: %w", err)
	}
	if err := p.Start(ctx); err != nil {
		return false, nil
	}
	select {
	case st := <-exited:
		return st.ExitCode() == 0, nil
	case <-ctx.Done():
		return false, ctx.Err()
	}
}
