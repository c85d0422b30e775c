package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/singleflight"
	"golang.org/x/sys/unix"

	lazyfs "github.com/lazysnap/lazysnap/fs"
	"github.com/lazysnap/lazysnap/fs/node"
	"github.com/lazysnap/lazysnap/internal/fused"
)

// handoverSocket is where the fused serving on fusedSock hands its mounts'
// connections over: ROOT/fused.handover.sock by default.
func handoverSocket(fusedSock string) string {
	return strings.TrimSuffix(fusedSock, ".sock") + ".handover.sock"
}

// handoverTimeout bounds one exchange on the handover socket; resuming a
// layer may read its TOC from the registry.
const handoverTimeout = time.Minute

// handoverProvider is package fs's side of the handover socket, in fused.
type handoverProvider struct{ fs *lazyfs.FS }

func (p handoverProvider) Handovers(mountpoint string) ([]fused.HandoverEntry, error) {
	hs, err := p.fs.Handovers(mountpoint)
	if err != nil {
		return nil, err
	}
	out := make([]fused.HandoverEntry, len(hs))
	for i, h := range hs {
		out[i] = fused.HandoverEntry{Mountpoint: h.Mountpoint, Labels: h.Labels, State: h.State, Conn: h.Conn, Modes: h.Modes}
	}
	return out, nil
}

func (p handoverProvider) Resume(ctx context.Context, e fused.HandoverEntry) error {
	return p.fs.Resume(ctx, lazyfs.Handover{
		Handover: node.Handover{Mountpoint: e.Mountpoint, Conn: e.Conn, Modes: e.Modes, State: e.State},
		Labels:   e.Labels,
	})
}

// heldFS is serve's client of fused with handover on: it collects each
// mount's connection from fused after mounting it and holds it until the
// unmount, so the mount outlives fused; resumeHeld gives them to a new
// fused.
type heldFS struct {
	*fused.Client
	socket string // fused's handover socket
	held   *fused.HandoverHolder
	log    *slog.Logger

	resumes singleflight.Group // by mountpoint: a second resume of one mount would fail
	heldAll bool               // serve took every connection of the fused it found at start
}

func newHeldFS(ctx context.Context, c *fused.Client, fusedSock string, log *slog.Logger) *heldFS {
	h := &heldFS{Client: c, socket: handoverSocket(fusedSock), held: fused.NewHandoverHolder(), log: log}
	// A fused that outlived the last serve holds mounts: take them all.
	h.heldAll = h.collect(ctx, "") == nil
	return h
}

func (h *heldFS) Mount(ctx context.Context, mountpoint string, labels map[string]string) error {
	if err := h.Client.Mount(ctx, mountpoint, labels); err != nil {
		return err
	}
	_ = h.collect(ctx, mountpoint) // logged: the mount works, without outliving fused
	return nil
}

// Check checks the mount; one fused does not know yet but serve holds (a
// check that came between a new fused's start and its resumes) is resumed
// first: mounting it again would drop the mount running containers use.
func (h *heldFS) Check(ctx context.Context, mountpoint string, labels map[string]string) error {
	err := h.Client.Check(ctx, mountpoint, labels)
	if !errdefs.IsNotFound(err) {
		return err
	}
	var found bool
	h.held.Each(func(e fused.HandoverEntry) {
		if e.Mountpoint == mountpoint {
			found = true
			if rerr := h.resume(ctx, e); rerr != nil {
				h.log.WarnContext(ctx, "resuming a held mount on its check", "mountpoint", mountpoint, "error", rerr)
			}
		}
	})
	if !found {
		return err
	}
	return h.Client.Check(ctx, mountpoint, labels)
}

// resume has fused serve e's mount unless it does already.
func (h *heldFS) resume(ctx context.Context, e fused.HandoverEntry) error {
	_, err, _ := h.resumes.Do(e.Mountpoint, func() (any, error) {
		if err := h.Client.Check(ctx, e.Mountpoint, e.Labels); !errdefs.IsNotFound(err) {
			return nil, nil // served (perhaps with a layer error Check reports)
		}
		ctx, cancel := context.WithTimeout(ctx, handoverTimeout)
		defer cancel()
		return nil, fused.ResumeHandover(ctx, h.socket, e)
	})
	return err
}

func (h *heldFS) Unmount(ctx context.Context, mountpoint string) error {
	h.held.Drop(mountpoint)
	return h.Client.Unmount(ctx, mountpoint)
}

// watch reports on the channel returned each time the fused it is
// connected to goes away, so that the supervisor starts the next one at
// once: until then, reads of every lazy layer wait.
func (h *heldFS) watch(ctx context.Context) <-chan struct{} {
	died := make(chan struct{}, 1)
	go func() {
		for ctx.Err() == nil {
			if err := fused.WatchHandover(ctx, h.socket, h.replaceIfStale); err == nil && ctx.Err() == nil {
				select {
				case died <- struct{}{}:
				default:
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return died
}

// replaceIfStale stops, with SIGTERM, a fused that runs another binary
// than this serve: serve was upgraded and restarted while fused kept the
// mounts. serve holds every mount's connection and is connected, so fused
// exits without unmounting, and the fused started next, from serve's
// binary, resumes them. An upgrade thus needs nothing but a restart of
// serve, whatever restarts it (systemd, the installer's supervisor).
func (h *heldFS) replaceIfStale(pid int) {
	if pid <= 0 || !h.heldAll {
		return // without every connection, its mounts would die with it
	}
	same, err := sameExecutable(os.Getpid(), pid)
	if err != nil || same {
		return
	}
	h.log.Info("fused runs another build than serve: replacing it; its mounts are handed over", "pid", pid)
	if err := unix.Kill(pid, unix.SIGTERM); err != nil {
		h.log.Warn("stopping the fused of another build", "pid", pid, "error", err)
	}
}

// sameExecutable reports whether processes a and b run the same file: a
// binary renamed over by an upgrade is another inode.
func sameExecutable(a, b int) (bool, error) {
	var sa, sb unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/exe", a), &sa); err != nil {
		return false, fmt.Errorf("finding process %d's binary: %w", a, err)
	}
	if err := unix.Stat(fmt.Sprintf("/proc/%d/exe", b), &sb); err != nil {
		return false, fmt.Errorf("finding process %d's binary: %w", b, err)
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino, nil
}

// collect takes the connections of mountpoint ("" for all) from fused. A
// failure leaves the mount working, without surviving fused: logged.
func (h *heldFS) collect(ctx context.Context, mountpoint string) error {
	ctx, cancel := context.WithTimeout(ctx, handoverTimeout)
	defer cancel()
	es, err := fused.CollectHandovers(ctx, h.socket, mountpoint)
	if err != nil {
		h.log.WarnContext(ctx, "collecting mounts' FUSE connections from fused; they will not survive it", "mountpoint", mountpoint, "error", err)
		return err
	}
	h.held.Put(es...)
	return nil
}

// resumeHeld gives every connection held to the fused just started, which
// serves them again. A mount it could not resume is dropped: the remount
// that follows mounts it anew.
func (h *heldFS) resumeHeld(ctx context.Context) {
	start := time.Now()
	var mu sync.Mutex
	var resumed, failed []string
	var g errgroup.Group
	g.SetLimit(resumeConcurrency)
	h.held.Each(func(e fused.HandoverEntry) {
		g.Go(func() error {
			err := h.resume(ctx, e)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				h.log.ErrorContext(ctx, "fused could not resume a mount; it will be mounted again", "mountpoint", e.Mountpoint, "error", err)
				failed = append(failed, e.Mountpoint)
				return nil
			}
			resumed = append(resumed, e.Mountpoint)
			return nil
		})
	})
	g.Wait()
	for _, mp := range failed {
		h.held.Drop(mp)
	}
	h.log.InfoContext(ctx, "fused resumed the mounts handed over", "resumed", len(resumed), "failed", len(failed), "took", time.Since(start))
}

// resumeConcurrency bounds the mounts resumed at once: each builds its
// layer's index from its TOC, which is CPU work.
const resumeConcurrency = 4

// warnOldKernel says what handover cannot do on a kernel before 6.9, which
// has no FUSE_NOTIFY_RESEND: the requests a dying fused had read are never
// answered, and their readers hang until the mount's connection is aborted.
func warnOldKernel(ctx context.Context, log *slog.Logger) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return
	}
	release := unix.ByteSliceToString(u.Release[:])
	var major, minor int
	if _, err := fmt.Sscanf(release, "%d.%d", &major, &minor); err != nil {
		return
	}
	if major < 6 || major == 6 && minor < 9 {
		log.WarnContext(ctx, "this kernel has no FUSE_NOTIFY_RESEND (Linux 6.9): reads in flight when fused dies hang instead of going on",
			"kernel", release)
	}
}
