package node

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/lazysnap/lazysnap/cache"
	"github.com/lazysnap/lazysnap/fs/layer"
	"github.com/lazysnap/lazysnap/internal/fdpass"
	"github.com/lazysnap/lazysnap/internal/testenv"
)

// The handover tests serve a real mount from a child process (this test
// binary, in helper mode), kill it while readers in the test process read,
// and have a new child resume the connection the test process held.
const (
	helperDirEnv  = "LAZYSNAP_NODE_HELPER_DIR"
	helperModeEnv = "LAZYSNAP_NODE_HELPER_MODE"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(helperDirEnv); dir != "" {
		if err := runHelper(dir, os.Getenv(helperModeEnv)); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(1)
		}
		return
	}
	os.Exit(m.Run())
}

// runHelper mounts (mode "mount") or resumes (mode "resume") the layer of
// dir, reports on dir/sock, and serves until killed; SIGTERM makes it exit
// without unmounting, as fused does with handover on.
func runHelper(dir, mode string) error {
	ctx := context.Background()
	data, err := os.ReadFile(filepath.Join(dir, "blob"))
	if err != nil {
		return err
	}
	tocDigest, err := os.ReadFile(filepath.Join(dir, "toc"))
	if err != nil {
		return err
	}
	toc, err := layer.ReadTOC(ctx, &badBlob{data: data}, digest.Digest(tocDigest))
	if err != nil {
		return err
	}
	store, err := cache.Open(filepath.Join(dir, "cache"))
	if err != nil {
		return err
	}
	l, err := layer.New(toc, store)
	if err != nil {
		return err
	}
	conn, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: filepath.Join(dir, "sock"), Net: "unixpacket"})
	if err != nil {
		return err
	}
	mnt := filepath.Join(dir, "mnt")
	if mode == "mount" {
		m, err := Mount(mnt, l)
		if err != nil {
			return err
		}
		h, err := m.Handover()
		if err != nil {
			return err
		}
		if err := fdpass.Send(conn, h.State, h.Conn, h.Modes); err != nil {
			return err
		}
		h.Close()
	} else {
		state, files, err := fdpass.Recv(conn)
		if err != nil {
			return err
		}
		if len(files) != 2 {
			return fmt.Errorf("got %d files", len(files))
		}
		if _, err := Resume(Handover{Mountpoint: mnt, Conn: files[0], Modes: files[1], State: state}, l); err != nil {
			return err
		}
		if err := fdpass.Send(conn, []byte("ok")); err != nil {
			return err
		}
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	<-sig
	return nil
}

// handoverLayer writes a layer of many files to dir and returns their
// contents by path.
func handoverLayer(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	r := rand.New(rand.NewPCG(1, 2))
	for d := range 4 {
		tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("d%d/", d), Typeflag: tar.TypeDir, Mode: 0o755})
		for f := range 12 {
			name := fmt.Sprintf("d%d/f%02d", d, f)
			data := make([]byte, 64<<10+r.IntN(1<<20))
			for i := range data {
				data[i] = byte(r.Uint32())
			}
			files[name] = data
			tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data))})
			tw.Write(data)
		}
	}
	tw.Close()
	eb, err := estargz.Build(io.NewSectionReader(bytes.NewReader(buf.Bytes()), 0, int64(buf.Len())), estargz.WithChunkSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	defer eb.Close()
	blob, err := io.ReadAll(eb)
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"blob": blob, "toc": []byte(eb.TOCDigest())} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"mnt", "cache"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	return files
}

// helper is one child process serving the mount.
type helper struct {
	cmd  *exec.Cmd
	conn *net.UnixConn
	done chan error
}

func startHelper(t *testing.T, dir, mode string, ln *net.UnixListener) *helper {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	// The race runtime sleeps a second before a process exits
	// (atexit_sleep_ms): a helper that exits on SIGTERM would count it as
	// switch time.
	race := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
	cmd.Env = append(os.Environ(), helperDirEnv+"="+dir, helperModeEnv+"="+mode, "GORACE="+race)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &helper{cmd: cmd, done: make(chan error, 1)}
	go func() { h.done <- cmd.Wait() }()
	ln.SetDeadline(time.Now().Add(30 * time.Second))
	conn, err := ln.AcceptUnix()
	if err != nil {
		cmd.Process.Kill()
		t.Fatalf("helper %s did not connect: %v", mode, err)
	}
	h.conn = conn
	return h
}

// stop ends the helper with sig and waits for it to exit.
func (h *helper) stop(sig os.Signal) {
	h.cmd.Process.Signal(sig)
	<-h.done
	h.conn.Close()
}

// readStats collects when every read started, how long it took, and its
// errors.
type readStats struct {
	mu    sync.Mutex
	start []time.Time
	lat   []time.Duration
	errs  []error
}

func (s *readStats) add(start time.Time, err error) {
	d := time.Since(start)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.start, s.lat = append(s.start, start), append(s.lat, d)
	if err != nil {
		s.errs = append(s.errs, err)
	}
}

// report logs the reads that overlap one of the windows (all reads when
// there are none), and fails the test for every error.
func (s *readStats) report(t *testing.T, what string, windows ...[2]time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var lat []time.Duration
	for i, d := range s.lat {
		in := len(windows) == 0
		for _, w := range windows {
			in = in || s.start[i].Before(w[1]) && s.start[i].Add(d).After(w[0])
		}
		if in {
			lat = append(lat, d)
		}
	}
	slices.Sort(lat)
	if len(lat) == 0 {
		t.Fatalf("%s: no reads", what)
	}
	q := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	t.Logf("%s: %d reads; latency p50 %v p99 %v max %v", what, len(lat), q(0.5), q(0.99), lat[len(lat)-1])
}

func (s *readStats) failOnErrors(t *testing.T) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t.Logf("%d read errors", len(s.errs))
	for i, err := range s.errs {
		if i == 10 {
			t.Errorf("and %d more", len(s.errs)-i)
			break
		}
		t.Errorf("read error: %v", err)
	}
}

// readLoop reads random ranges of random files until stop: a new open per
// read when hold is false, one handle held throughout (opened by an earlier
// helper, for the later ones) when it is true. The range is dropped from
// the page cache first, so that every read reaches the FUSE server (plain
// reads; passthrough opens only reach it to open and release).
func readLoop(mnt string, files map[string][]byte, seed uint64, hold bool, stop <-chan struct{}, s *readStats) {
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range files {
			if !yield(n) {
				return
			}
		}
	})
	r := rand.New(rand.NewPCG(seed, 7))
	var held *os.File
	heldName := names[r.IntN(len(names))]
	defer func() {
		if held != nil {
			held.Close()
		}
	}()
	for {
		select {
		case <-stop:
			return
		default:
		}
		name := heldName
		if !hold {
			name = names[r.IntN(len(names))]
		}
		want := files[name]
		off := r.IntN(len(want))
		n := min(len(want)-off, 1+r.IntN(256<<10))
		start := time.Now()
		err := func() error {
			f := held
			if f == nil {
				var err error
				if f, err = os.Open(filepath.Join(mnt, name)); err != nil {
					return err
				}
				if hold {
					held = f
				} else {
					defer f.Close()
				}
			}
			unix.Fadvise(int(f.Fd()), int64(off), int64(n), unix.FADV_DONTNEED)
			got := make([]byte, n)
			if _, err := f.ReadAt(got, int64(off)); err != nil {
				return fmt.Errorf("%s at %d: %w", name, off, err)
			}
			if !bytes.Equal(got, want[off:off+n]) {
				return fmt.Errorf("%s at %d: wrong bytes", name, off)
			}
			return nil
		}()
		s.add(start, err)
	}
}

// TestResumeAfterKill: readers read a mount (checking every byte) while its
// server is killed with SIGKILL, three times, and a new process resumes the
// connection each time. No read may fail.
func TestResumeAfterKill(t *testing.T) {
	testHandover(t, syscall.SIGKILL)
}

// TestResumeAfterTerm: the same when the server is asked to stop (SIGTERM,
// as for an upgrade) and exits without unmounting.
func TestResumeAfterTerm(t *testing.T) {
	testHandover(t, syscall.SIGTERM)
}

func testHandover(t *testing.T, sig syscall.Signal) {
	testenv.RequireRoot(t)
	testenv.RequireFUSE(t)
	dir := t.TempDir()
	files := handoverLayer(t, dir)
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: filepath.Join(dir, "sock"), Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	mnt := filepath.Join(dir, "mnt")
	cur := startHelper(t, dir, "mount", ln)
	state, held, err := fdpass.Recv(cur.conn)
	if err != nil || len(held) != 2 {
		t.Fatalf("handover from the first server: %v (%d files)", err, len(held))
	}
	defer func() {
		unix.Unmount(mnt, unix.MNT_DETACH)
		cur.stop(syscall.SIGKILL)
		for _, f := range held {
			f.Close()
		}
	}()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var stats readStats
	for i := range 8 {
		wg.Go(func() { readLoop(mnt, files, uint64(i), i%2 == 1, stop, &stats) })
	}
	time.Sleep(time.Second)
	var switches [][2]time.Time
	for range 3 {
		before := time.Now()
		cur.stop(sig)
		cur = startHelper(t, dir, "resume", ln)
		if err := fdpass.Send(cur.conn, state, held...); err != nil {
			t.Fatal(err)
		}
		if msg, _, err := fdpass.Recv(cur.conn); err != nil || string(msg) != "ok" {
			t.Fatalf("resume: %q, %v", msg, err)
		}
		switches = append(switches, [2]time.Time{before, time.Now()})
		t.Logf("%v: server down to resumed in %v", sig, time.Since(before))
		time.Sleep(time.Second)
	}
	close(stop)
	wg.Wait()
	stats.report(t, "all reads")
	stats.report(t, "reads overlapping a switch", switches...)
	stats.failOnErrors(t)
}
