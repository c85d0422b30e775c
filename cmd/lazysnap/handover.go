package main

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/authn"
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
	creds   credentialLog      // what the CRI proxy told fused, for the next fused
}

// credentialLog remembers, in memory only, the credentials serve passed to
// fused, so that a fused started after a crash or an upgrade gets them
// before it resumes the mounts: the mounts survive fused, so must what
// reading a private image takes. The calls are replayed in their order (a
// repository carries its pull's step, see credstore.PullRepository), the
// last one per host and repository string, so the log stays as small as
// the set of repositories pulled.
type credentialLog struct {
	mu    sync.Mutex
	seq   uint64
	calls map[[2]string]credentialCall
}

type credentialCall struct {
	seq              uint64
	host, repository string
	auth             authn.AuthConfig
}

func (l *credentialLog) add(host, repository string, auth authn.AuthConfig) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.calls == nil {
		l.calls = map[[2]string]credentialCall{}
	}
	l.seq++
	l.calls[[2]string{host, repository}] = credentialCall{seq: l.seq, host: host, repository: repository, auth: auth}
}

// inOrder returns the calls remembered, oldest first.
func (l *credentialLog) inOrder() []credentialCall {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]credentialCall, 0, len(l.calls))
	for _, c := range l.calls {
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b credentialCall) int { return cmp.Compare(a.seq, b.seq) })
	return out
}

// SetCredentials passes a pull's credentials to fused and remembers them
// for the next fused.
func (h *heldFS) SetCredentials(ctx context.Context, host, repository string, auth authn.AuthConfig) error {
	h.creds.add(host, repository, auth)
	return h.Client.SetCredentials(ctx, host, repository, auth)
}

// replayCredentials gives a new fused the credentials its predecessor had
// from serve.
func (h *heldFS) replayCredentials(ctx context.Context) {
	calls := h.creds.inOrder()
	for _, c := range calls {
		if err := h.Client.SetCredentials(ctx, c.host, c.repository, c.auth); err != nil {
			h.log.WarnContext(ctx, "passing credentials to the new fused", "host", c.host, "error", err)
		}
	}
	if len(calls) > 0 {
		h.log.InfoContext(ctx, "passed the registry credentials serve holds to the new fused", "calls", len(calls))
	}
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
// than the one now at the path serve starts fused from: lazysnap was
// upgraded (the new binary renamed over the old) and serve restarted while
// fused kept the mounts. serve holds every mount's connection and is
// connected, so fused exits without unmounting, and the fused started
// next, from the binary now on disk, resumes them. An upgrade thus needs
// nothing but a restart of serve, whatever restarts it (systemd, the
// installer's supervisor). Comparing with the file on disk, not with
// serve's own binary, keeps an old serve from replacing, again and again,
// a fused newer than itself.
func (h *heldFS) replaceIfStale(pid int) {
	if pid <= 0 || !h.heldAll {
		return // without every connection, its mounts would die with it
	}
	exe, err := os.Executable()
	if err != nil {
		return
	}
	same, err := runsFile(pid, exe)
	if err != nil || same {
		return
	}
	h.log.Info("fused runs another build than serve: replacing it; its mounts are handed over", "pid", pid)
	if err := unix.Kill(pid, unix.SIGTERM); err != nil {
		h.log.Warn("stopping the fused of another build", "pid", pid, "error", err)
	}
}

// runsFile reports whether process pid runs the file at path: a binary
// renamed over by an upgrade is another inode.
func runsFile(pid int, path string) (bool, error) {
	var running, onDisk unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/exe", pid), &running); err != nil {
		return false, fmt.Errorf("finding process %d's binary: %w", pid, err)
	}
	if err := unix.Stat(path, &onDisk); err != nil {
		return false, fmt.Errorf("finding %s: %w", path, err)
	}
	return running.Dev == onDisk.Dev && running.Ino == onDisk.Ino, nil
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

// resumeHeld gives the fused just started the credentials serve holds, then
// every connection held, which it serves again. A mount it could not
// resume is dropped: the remount that follows mounts it anew.
func (h *heldFS) resumeHeld(ctx context.Context) {
	h.replayCredentials(ctx)
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
