package record

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"time"
)

const (
	// killRetry is how often a kill is retried while runc has not yet
	// created the container (a stop can come before the container exists).
	killRetry = 50 * time.Millisecond
	// killAttempts bounds those retries; then runc itself is killed, as a
	// last resort against a runc that hangs.
	killAttempts = 200
	// outputDrain bounds how long, after runc exits, its output is still
	// copied: a process that escaped the pid namespace could hold it open.
	outputDrain = 5 * time.Second
)

// container is a workload run in the foreground by `runc run`.
type container struct {
	runc   string
	root   string // runc's private state dir
	id     string
	cmd    *exec.Cmd
	exited chan struct{}
	err    error // of cmd.Wait, set before exited is closed
}

// startContainer runs the bundle in dir with runc, its stdout and stderr
// going to stdout and stderr.
func startContainer(runc, stateDir, bundle, id string, stdout, stderr io.Writer) (*container, error) {
	c := &container{runc: runc, root: stateDir, id: id, exited: make(chan struct{})}
	// Not CommandContext: the container is stopped through runc (kill, then
	// delete), never by killing runc itself, which would orphan it.
	c.cmd = exec.Command(runc, "--root", stateDir, "run", "--bundle", bundle, id)
	c.cmd.Stdout, c.cmd.Stderr = stdout, stderr
	c.cmd.WaitDelay = outputDrain
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting runc: %w", err)
	}
	go func() {
		c.err = c.cmd.Wait()
		close(c.exited)
	}()
	return c, nil
}

// exitCode returns the workload's exit status, once exited is closed. runc
// reports a workload killed by signal N as 128+N.
func (c *container) exitCode() int {
	var ee *exec.ExitError
	if errors.As(c.err, &ee) {
		return ee.ExitCode()
	}
	if c.err != nil {
		return -1
	}
	return 0
}

// stop kills the workload (every process of its pid namespace dies with
// it), waits for runc to return, and deletes what runc may have left. ctx
// should outlive the caller's cancellation, or the workload is left running.
func (c *container) stop(ctx context.Context) error {
	if !c.kill(ctx) {
		_ = c.cmd.Process.Kill()
	}
	<-c.exited
	if err := c.runcCmd(ctx, "delete", "--force", c.id); err != nil && !strings.Contains(err.Error(), "does not exist") {
		return err
	}
	return nil
}

// kill sends SIGKILL through runc, retrying while the container does not
// exist yet, and reports whether the container is dead or never started.
func (c *container) kill(ctx context.Context) bool {
	for range killAttempts {
		if c.runcCmd(ctx, "kill", c.id, "KILL") == nil {
			return true
		}
		select {
		case <-c.exited:
			return true
		case <-time.After(killRetry):
		}
	}
	return false
}

// runcCmd runs one runc command on this container's state dir.
func (c *container) runcCmd(ctx context.Context, args ...string) error {
	args = append([]string{"--root", c.root}, args...)
	out, err := exec.CommandContext(ctx, c.runc, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("runc %s: %w: %s", strings.Join(args[2:], " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// newStreams returns stdout and stderr writers that copy to sink and fire
// ready at the first line of either containing text.
func newStreams(text string, sink io.Writer, ready *readySignal) (stdout, stderr io.Writer) {
	mu := &sync.Mutex{}
	mk := func() io.Writer { return &lineWatcher{text: []byte(text), ready: ready, mu: mu, sink: sink} }
	return mk(), mk()
}
