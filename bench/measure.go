package bench

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/containerd/v2/plugins"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/lazysnap/lazysnap/internal/testenv"
)

// benchCase is one workload in one mode, at one repetition.
type benchCase struct {
	workload Workload
	mode     Mode
	rep      int
	// ref is the mode's image, pulled through the counting proxy.
	ref string
}

func (c benchCase) name() string { return fmt.Sprintf("%s/%s/rep%d", c.workload.Name, c.mode, c.rep+1) }

// containerID is the benchmark container's id in each case's containerd.
const containerID = "bench"

// measure runs one case on a cold node: the clock starts at pull start,
// after containerd (and lazysnap) are up.
func (e *env) measure(ctx context.Context, tb testing.TB, c benchCase) (Result, error) {
	var disk string
	if e.freshDisks {
		disk = freshDisk(tb, e.diskDir)
	}
	cd := e.startNode(tb, c.mode, c.name())
	r := Result{Workload: c.workload.Name, Mode: c.mode, Rep: c.rep + 1}
	if c.mode == Local {
		if err := e.pullCold(ctx, cd, c, disk); err != nil {
			return r, err
		}
	}
	e.proxy.Reset()
	start := time.Now()
	r.Started = start
	if c.mode != Local {
		if err := e.pull(ctx, cd, c); err != nil {
			return r, err
		}
	}
	pulled := time.Now()
	ctr, task, out, err := createTask(ctx, cd, c)
	if err != nil {
		return r, err
	}
	created := time.Now()
	e.footprint.addPID(int(task.Pid()))
	readyCtx, cancel := context.WithTimeout(ctx, e.readyTimeout)
	defer cancel()
	if err := startUntilReady(readyCtx, ctr, task, out, c.workload.Ready); err != nil {
		return r, fmt.Errorf("waiting for ready (at most %s): %w", e.readyTimeout, err)
	}
	ready := time.Now()
	if err := e.checkMountedLazily(ctx, cd, c.mode); err != nil {
		return r, err
	}
	r.BytesAtReady, r.RequestsAtReady = e.proxy.BlobBytes(), e.proxy.BlobGets()
	r.PullSeconds, r.CreateSeconds = pulled.Sub(start).Seconds(), created.Sub(pulled).Seconds()
	r.RunSeconds, r.ReadySeconds = ready.Sub(created).Seconds(), ready.Sub(start).Seconds()
	r.BytesTotal, r.RequestsTotal, r.TotalSettled = e.settle(ctx)
	if e.requestLog {
		r.Requests = requestLog(e.proxy.Gets(), start)
	}
	return r, nil
}

// requestLog turns the proxy's GETs into a case's request log.
func requestLog(gets []testenv.BlobGet, start time.Time) []Request {
	out := make([]Request, 0, len(gets))
	for _, g := range gets {
		blob := strings.TrimPrefix(g.Blob, "sha256:")
		blob = blob[:min(12, len(blob))]
		req := Request{Blob: blob, Range: g.Range, Start: g.Start.Sub(start).Seconds(), Bytes: g.Bytes}
		if !g.End.IsZero() {
			req.End = g.End.Sub(start).Seconds()
		}
		out = append(out, req)
	}
	return out
}

// pullCold pulls the image in full, then writes back and evicts from the
// page cache every file of the node's containerd root (the unpacked
// snapshots and the content store), so the workload starts from local disk
// but cold, as on a node that pulled the image long ago. Only those files:
// dropping the whole page cache (vm/drop_caches) also evicted the binaries
// of containerd, runc, lazysnap and the peers, and the cases after this one
// then loaded them from disk inside their measurement. disk, when not "",
// is the image file the node's file system lives in (freshDisk): the loop
// device reads it through the host's page cache, so it is evicted too.
func (e *env) pullCold(ctx context.Context, cd *testenv.Containerd, c benchCase, disk string) error {
	if err := e.pull(ctx, cd, c); err != nil {
		return err
	}
	// Twice: the first writes the node's file system to its loop device,
	// whose writes reach the image file's pages, which the second writes.
	syscall.Sync()
	syscall.Sync()
	if err := evictPageCache(cd.Root); err != nil {
		return fmt.Errorf("evicting the pulled image from the page cache: %w", err)
	}
	if disk != "" {
		if err := evictPageCache(disk); err != nil {
			return fmt.Errorf("evicting the node's disk image from the page cache: %w", err)
		}
	}
	return nil
}

// evictPageCache drops the cached pages of every regular file under root
// (written back already: clean pages are all FADV_DONTNEED drops).
func evictPageCache(root string) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		return unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	})
}

// pull runs `lazysnap pull` for every mode: the same containerd client
// pull, with unpacking and the remote-snapshot labels, so only the
// snapshotter differs (overlayfs downloads and unpacks every layer).
func (e *env) pull(ctx context.Context, cd *testenv.Containerd, c benchCase) error {
	cmd := exec.CommandContext(ctx, e.lazysnapBin, "pull", "--address", cd.Address, "--namespace", cd.Namespace,
		"--hosts-dir", cd.HostsDir, "--snapshotter", c.mode.snapshotter(), "--plain-http", c.ref)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("lazysnap pull %s: %w\n%s", c.ref, err, tail(out.Bytes(), 3000))
	}
	return nil
}

// createTask creates the container (preparing its snapshot) and its task
// (mounting the rootfs, runc create), as `ctr run --net-host` would, with
// the node's runc, runc root and FIFO dir.
func createTask(ctx context.Context, cd *testenv.Containerd, c benchCase) (client.Container, client.Task, *lineWatcher, error) {
	img, err := cd.Client.GetImage(ctx, c.ref)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("getting image %s: %w", c.ref, err)
	}
	ctr, err := cd.Client.NewContainer(ctx, containerID,
		client.WithSnapshotter(c.mode.snapshotter()),
		client.WithNewSnapshot(containerID, img),
		client.WithRuntime(plugins.RuntimeRuncV2, &runcoptions.Options{BinaryName: cd.Runc, Root: cd.RuncRoot()}),
		client.WithNewSpec(oci.WithImageConfig(img), oci.WithProcessArgs(c.workload.Cmd...),
			oci.WithHostNamespace(specs.NetworkNamespace), oci.WithHostHostsFile, oci.WithHostResolvconf,
			oci.WithCgroup(cgroupPath(cd))))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("creating container: %w", err)
	}
	out := newLineWatcher(c.workload.Ready.Line)
	task, err := ctr.NewTask(ctx, cio.NewCreator(cio.WithStreams(nil, out, out), cio.WithFIFODir(cd.FIFODir())))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("creating task: %w", err)
	}
	return ctr, task, out, nil
}

// cgroupPath is the container's cgroup, named after the node's private run
// dir: the default (/NAMESPACE/ID, here /default/bench) is the same for
// every node, so two benchmarks on one host (or a case beside a stale
// container) would share it, and runc refuses a cgroup that is not empty.
// One level only, so that runc's removal of the container's cgroup leaves
// no empty parent behind.
func cgroupPath(cd *testenv.Containerd) string {
	return "/" + filepath.Base(cd.RunDir()) + "-" + containerID
}

// startUntilReady starts the task and waits for its ready signal; a task
// that exits first is an error.
func startUntilReady(ctx context.Context, ctr client.Container, task client.Task, out *lineWatcher, sig ReadySignal) error {
	exited, err := task.Wait(ctx)
	if err != nil {
		return fmt.Errorf("waiting for task: %w", err)
	}
	if err := task.Start(ctx); err != nil {
		return fmt.Errorf("starting task: %w", err)
	}
	ready := out.ready
	probeErr := make(chan error, 1)
	if len(sig.Probe) > 0 {
		probeCtx, cancel := context.WithCancel(ctx)
		defer cancel()
		ready = make(chan struct{})
		go func() { probeErr <- closeWhenProbed(probeCtx, ctr, task, sig.Probe, ready) }()
	}
	select {
	case <-ready:
		return nil
	case err := <-probeErr:
		return err
	case st := <-exited:
		return readyAfterExit(task, out, st)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// readyAfterExit tells whether a workload that exited (python printing its
// line and exiting) printed its ready line: its output may still be in the
// FIFO when the exit is reported, so the copy must finish first.
func readyAfterExit(task client.Task, out *lineWatcher, st client.ExitStatus) error {
	if io := task.IO(); io != nil {
		io.Wait()
	}
	select {
	case <-out.ready:
		return nil
	default:
		return fmt.Errorf("workload exited (status %d) before ready; output:\n%s", st.ExitCode(), out.output())
	}
}

func closeWhenProbed(ctx context.Context, ctr client.Container, task client.Task, probe []string, ready chan struct{}) error {
	if err := probeUntilReady(ctx, ctr, task, probe); err != nil {
		return fmt.Errorf("probing %s: %w", strings.Join(probe, " "), err)
	}
	close(ready)
	return nil
}

// settle waits until the registry has served no blob bytes for the quiet
// period (background fetch done), or the cap passes, and returns the
// totals since pull start and whether they settled.
func (e *env) settle(ctx context.Context) (int64, int64, bool) {
	deadline := time.Now().Add(e.settleCap)
	last, quietSince := e.proxy.BlobBytes(), time.Now()
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return e.proxy.BlobBytes(), e.proxy.BlobGets(), false
		case <-time.After(100 * time.Millisecond):
		}
		if n := e.proxy.BlobBytes(); n != last {
			last, quietSince = n, time.Now()
		}
		if time.Since(quietSince) >= e.settleQuiet {
			return e.proxy.BlobBytes(), e.proxy.BlobGets(), true
		}
	}
	return e.proxy.BlobBytes(), e.proxy.BlobGets(), false
}
