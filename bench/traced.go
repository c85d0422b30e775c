package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"

	"github.com/lazysnap/lazysnap/internal/testenv"
	"github.com/lazysnap/lazysnap/prefetchlist"
)

// traceExportWait bounds the wait for the trace after the image is
// removed: fused saves it when the image's last layer unmounts, which may
// land just after containerd's removal returns, and every 10 s anyway.
const traceExportWait = 30 * time.Second

// recordTrace learns the traced mode's prioritized list as a user would on
// a staging node: on a scratch node (fresh containerd and lazysnap, like a
// case's, but unmeasured, on the unshaped link) it pulls ref, the plain
// eStargz conversion, lazily, runs the workload until ready, stops it,
// removes the container and the image so that fused saves the trace, and
// writes `lazysnap trace export` to path. The node is torn down before
// recordTrace returns, so it does not run beside the measured cases.
func (e *env) recordTrace(ctx context.Context, tb testing.TB, w Workload, ref, path string) error {
	return e.recordTraceAnd(ctx, tb, w, ref, path, false)
}

// publishShared publishes the shared mode's image: the plain conversion,
// under a repository of its own (referrers are per repository, so the
// other modes' plain image stays without a trace to find), and the trace a
// scratch node records running it, pushed there as its referrer.
func (e *env) publishShared(ctx context.Context, tb testing.TB, conv *converter, w Workload, src *testenv.Image) (string, error) {
	dst := e.shaped.Direct.Ref(fmt.Sprintf("bench-%s-shared:%s", w.Name, safeTag(Shared.conversion())))
	if err := conv.publish(ctx, w, src, Shared, dst, nil); err != nil {
		return "", err
	}
	path := filepath.Join(tb.TempDir(), "shared-trace.txt")
	if err := e.recordTraceAnd(ctx, tb, w, testenv.RefVia(dst, e.proxy.Host), path, true); err != nil {
		return "", fmt.Errorf("recording the shared trace: %w", err)
	}
	return dst, nil
}

// recordTraceAnd is recordTrace, then with push `lazysnap trace export
// --push` from the scratch node, before it is torn down.
func (e *env) recordTraceAnd(ctx context.Context, tb testing.TB, w Workload, ref, path string, push bool) error {
	e.logger.Info("recording the trace on a scratch node", "workload", w.Name)
	s := &scope{TB: tb}
	defer s.close()
	cd := e.startNode(s, Traced, w.Name+"/trace-recording")
	c := benchCase{workload: w, mode: Traced, ref: ref}
	if err := e.pull(ctx, cd, c); err != nil {
		return err
	}
	ctr, task, out, err := createTask(ctx, cd, c)
	if err != nil {
		return err
	}
	e.footprint.addPID(int(task.Pid()))
	readyCtx, cancel := context.WithTimeout(ctx, e.readyTimeout)
	defer cancel()
	if err := startUntilReady(readyCtx, ctr, task, out, w.Ready); err != nil {
		return fmt.Errorf("waiting for ready (at most %s): %w", e.readyTimeout, err)
	}
	if err := removeWorkload(ctx, cd, ctr, task, ref); err != nil {
		return err
	}
	n, err := exportTrace(ctx, e.lazysnapBin, cd.Proxy.Root, ref, path)
	if err != nil {
		return err
	}
	e.logger.Info("trace recorded", "workload", w.Name, "files", n)
	if push {
		return pushTrace(ctx, e.lazysnapBin, cd.Proxy.Root, ref)
	}
	return nil
}

// pushTrace runs `lazysnap trace export --push` for ref.
func pushTrace(ctx context.Context, bin, root, ref string) error {
	cmd := exec.CommandContext(ctx, bin, "trace", "export", "--push", "--plain-http", "--root", root, ref)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("lazysnap trace export --push: %w: %s", err, tail(b, 1000))
	}
	return nil
}

// removeWorkload stops the task (a server never exits by itself) and
// removes the container, its snapshot and the image, synchronously, so
// that no snapshot holds the image's layers mounted any more.
func removeWorkload(ctx context.Context, cd *testenv.Containerd, ctr client.Container, task client.Task, ref string) error {
	if _, err := task.Delete(ctx, client.WithProcessKill); err != nil {
		return fmt.Errorf("deleting task: %w", err)
	}
	if err := ctr.Delete(ctx, client.WithSnapshotCleanup); err != nil {
		return fmt.Errorf("deleting container: %w", err)
	}
	if err := cd.Client.ImageService().Delete(ctx, ref, images.SynchronousDelete()); err != nil {
		return fmt.Errorf("removing image %s: %w", ref, err)
	}
	return nil
}

// exportTrace runs `lazysnap trace export` until it lists at least one
// file, bounded by traceExportWait, and returns how many it lists.
func exportTrace(ctx context.Context, bin, root, ref, path string) (int, error) {
	deadline := time.Now().Add(traceExportWait)
	for {
		n, err := tryExport(ctx, bin, root, ref, path)
		if err == nil && n > 0 {
			return n, nil
		}
		if err == nil {
			err = fmt.Errorf("the trace lists no file")
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("no trace of %s after %s: %w", ref, traceExportWait, err)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func tryExport(ctx context.Context, bin, root, ref, path string) (int, error) {
	cmd := exec.CommandContext(ctx, bin, "trace", "export", "--root", root, ref, "-o", path)
	if b, err := cmd.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("lazysnap trace export: %w: %s", err, tail(b, 1000))
	}
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("reading the export: %w", err)
	}
	defer f.Close()
	list, err := prefetchlist.Read(f)
	if err != nil {
		return 0, fmt.Errorf("reading the export: %w", err)
	}
	return len(list.Paths), nil
}

// scope is a testing.TB whose cleanups and temp dirs are its own, run by
// close rather than when the test ends: the scratch node must be gone
// before the cases are measured, and set-up runs outside any subtest (a
// sub-benchmark would be reported among the results). Everything else,
// failing included, goes to the embedded TB.
type scope struct {
	testing.TB

	mu       sync.Mutex
	cleanups []func()
}

func (s *scope) Cleanup(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cleanups = append(s.cleanups, f)
}

// TempDir is removed by close, after the cleanups registered later (those
// of what was started in it: unmounting comes before removing).
func (s *scope) TempDir() string {
	s.Helper()
	dir, err := os.MkdirTemp("", "lazysnap-bench-scratch-")
	if err != nil {
		s.Fatalf("creating temp dir: %v", err)
	}
	s.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			s.Errorf("removing %s: %v", dir, err)
		}
	})
	return dir
}

// close runs the cleanups last-in first-out, each deferred so that one
// that fails the test (runtime.Goexit) does not skip the others.
func (s *scope) close() {
	s.mu.Lock()
	fs := s.cleanups
	s.cleanups = nil
	s.mu.Unlock()
	for _, f := range fs {
		defer f()
	}
}
