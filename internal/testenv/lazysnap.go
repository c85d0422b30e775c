package testenv

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Lazysnap is a `lazysnap serve` process serving the proxy snapshotter of a
// test containerd (see WithLazysnap).
type Lazysnap struct {
	// Socket is the gRPC socket containerd dials.
	Socket string
	// Root is the snapshotter's root directory.
	Root string
	// ConfigPath is the TOML config file passed with --config.
	ConfigPath string
	// Bin is the lazysnap binary.
	Bin string

	t       testing.TB
	cd      *Containerd
	logPath string
	keepLog string // where cleanup copies the logs to; "" keeps none
	cmd     *exec.Cmd
	exited  chan struct{}
}

type lazysnapOptions struct {
	config  string
	ready   time.Duration
	bin     string
	keepLog string
}

// LazysnapOption configures StartLazysnap.
type LazysnapOption func(*lazysnapOptions)

func defaultLazysnapOptions() lazysnapOptions {
	return lazysnapOptions{ready: 60 * time.Second, bin: LazysnapBin()}
}

// WithLazysnapConfig sets the content of the TOML config file. The default
// is an empty file (every setting at its default).
func WithLazysnapConfig(toml string) LazysnapOption {
	return func(o *lazysnapOptions) { o.config = toml }
}

// WithLazysnapBinary runs the lazysnap binary at path instead. The default
// is LazysnapBin().
func WithLazysnapBinary(path string) LazysnapOption {
	return func(o *lazysnapOptions) { o.bin = path }
}

// WithLogsKept runs lazysnap at log level debug and, at cleanup, copies
// serve's log (lazysnap.log) and fused's (fused.log) into dir, which it
// creates. The default keeps no logs.
func WithLogsKept(dir string) LazysnapOption {
	return func(o *lazysnapOptions) { o.keepLog = dir }
}

// WithReadyTimeout bounds the wait until containerd reaches the snapshotter.
// The default is 60s.
func WithReadyTimeout(d time.Duration) LazysnapOption {
	return func(o *lazysnapOptions) { o.ready = d }
}

// LazysnapBin is $LAZYSNAP_BIN, or bin/lazysnap in the repository.
func LazysnapBin() string { return repoBinary("LAZYSNAP_BIN", "lazysnap") }

// LazyconvBin is $LAZYCONV_BIN, or bin/lazyconv in the repository.
func LazyconvBin() string { return repoBinary("LAZYCONV_BIN", "lazyconv") }

func repoBinary(env, name string) string {
	if p := os.Getenv(env); p != "" {
		return p
	}
	return filepath.Join(RepoRoot(), "bin", name)
}

// RepoRoot is the nearest directory above the working directory holding
// go.mod (tests run in their package directory).
func RepoRoot() string {
	dir, _ := os.Getwd()
	for d := dir; d != filepath.Dir(d); d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
	}
	return dir
}

// StartLazysnap starts `lazysnap serve` for cd (which must have been started
// WithLazysnap) and waits until containerd reaches it. Cleanup stops the
// containers first (they read from its mounts), then serve and the
// `lazysnap fused` helper it started, then unmounts what is left in Root.
func StartLazysnap(t testing.TB, cd *Containerd, opts ...LazysnapOption) *Lazysnap {
	t.Helper()
	if cd.Proxy == nil {
		t.Fatal("StartLazysnap needs a containerd started WithLazysnap()")
	}
	o := defaultLazysnapOptions()
	for _, opt := range opts {
		opt(&o)
	}
	dir := t.TempDir()
	l := &Lazysnap{
		Socket:     cd.Proxy.Socket,
		Root:       cd.Proxy.Root,
		ConfigPath: filepath.Join(dir, "lazysnap.toml"),
		Bin:        o.bin,
		t:          t,
		cd:         cd,
		logPath:    filepath.Join(dir, "lazysnap.log"),
		keepLog:    o.keepLog,
	}
	if o.keepLog != "" {
		o.config = "log_level = \"debug\"\n" + o.config
	}
	if err := os.WriteFile(l.ConfigPath, []byte(o.config), 0o644); err != nil {
		t.Fatalf("writing lazysnap config: %v", err)
	}
	t.Cleanup(l.cleanup)
	if err := l.start(); err != nil {
		t.Fatal(err)
	}
	if err := l.waitReady(o.ready); err != nil {
		t.Fatal(err)
	}
	return l
}

// start launches serve in its own process group. The stale socket of a
// killed predecessor is removed first, or serve could not listen.
func (l *Lazysnap) start() error {
	if err := os.Remove(l.Socket); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("removing stale socket: %w", err)
	}
	logFile, err := os.OpenFile(l.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("opening lazysnap log: %w", err)
	}
	cmd := exec.Command(l.Bin, "serve", "--address", l.Socket, "--root", l.Root, "--config", l.ConfigPath)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	setProcessGroup(cmd)
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("starting %s: %w", l.Bin, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logFile.Close()
		close(exited)
	}()
	l.cmd, l.exited = cmd, exited
	return nil
}

// waitReady polls probe until it succeeds: containerd reconnects to a
// proxy snapshotter with backoff.
func (l *Lazysnap) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := l.probe()
		if err == nil {
			return nil
		}
		select {
		case <-l.exited:
			return fmt.Errorf("lazysnap serve exited: %s\n%s", l.cmd.ProcessState, l.logTail())
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("containerd did not reach lazysnap within %s: %w\n%s", timeout, err, l.logTail())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// PID is the process id of the running serve process.
func (l *Lazysnap) PID() int { return l.cmd.Process.Pid }

// Kill sends SIGKILL to serve only (not its process group, so a `lazysnap
// fused` helper survives, as it would a crash) and reaps it.
func (l *Lazysnap) Kill() {
	l.t.Helper()
	_ = l.cmd.Process.Signal(syscall.SIGKILL)
	<-l.exited
}

// Stop sends SIGTERM to serve and waits for it to exit (SIGKILL after 30s).
func (l *Lazysnap) Stop() {
	l.t.Helper()
	_ = l.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-l.exited:
	case <-time.After(30 * time.Second):
		l.t.Errorf("lazysnap serve ignored SIGTERM for 30s; killing it")
		l.Kill()
	}
}

// Restart starts serve again after Kill or Stop and waits until containerd
// reaches it.
func (l *Lazysnap) Restart() {
	l.t.Helper()
	select {
	case <-l.exited:
	default:
		l.t.Fatal("Restart: lazysnap serve is still running; Kill or Stop it first")
	}
	if err := l.start(); err != nil {
		l.t.Fatal(err)
	}
	if err := l.waitReady(defaultLazysnapOptions().ready); err != nil {
		l.t.Fatal(err)
	}
}

// logTail returns the end of serve's output and of the fused log serve
// keeps in its root.
func (l *Lazysnap) logTail() string {
	b, _ := os.ReadFile(l.logPath)
	fused, _ := os.ReadFile(filepath.Join(l.Root, "fused.log"))
	return "lazysnap serve output:\n" + tail(b, 4000) + "\nlazysnap fused output:\n" + tail(fused, 4000)
}

func (l *Lazysnap) cleanup() {
	l.cd.stopContainers()
	if l.cmd != nil {
		select {
		case <-l.exited:
			l.t.Logf("lazysnap serve had exited before cleanup: %s", l.cmd.ProcessState)
		default:
			l.Stop()
		}
	}
	l.killHelpers()
	if l.keepLog != "" {
		if err := l.copyLogs(); err != nil {
			l.t.Errorf("keeping lazysnap's logs: %v", err)
		}
	}
	if err := UnmountUnder(l.Root); err != nil {
		l.t.Logf("lazysnap cleanup: %v", err)
	}
	if l.t.Failed() {
		l.t.Log(l.logTail())
	}
}

// killHelpers kills `lazysnap fused` processes of this instance: the one
// named in Root/fused.pid, and any whose arguments mention Root or Socket.
func (l *Lazysnap) killHelpers() {
	pids := map[int]bool{}
	if b, err := os.ReadFile(filepath.Join(l.Root, "fused.pid")); err == nil {
		var pid int
		if _, err := fmt.Sscanf(strings.TrimSpace(string(b)), "%d", &pid); err == nil && isLazysnap(pid, l.Bin) {
			pids[pid] = true
		}
	}
	for _, p := range processesMentioning(l.Root, l.Socket) {
		if isLazysnap(p.pid, l.Bin) {
			pids[p.pid] = true
		}
	}
	for pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// isLazysnap guards against a reused PID: it checks /proc/PID/exe (which
// ends in " (deleted)" if `make build` replaced the binary meanwhile).
func isLazysnap(pid int, bin string) bool {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return false
	}
	exe = strings.TrimSuffix(exe, " (deleted)")
	want, _ := filepath.Abs(bin)
	return exe == want || filepath.Base(exe) == filepath.Base(bin)
}

// FusedPID returns the PID of the `lazysnap fused` serving Root, or 0 when
// none runs.
func (l *Lazysnap) FusedPID() int {
	for _, p := range processesMentioning(l.Root) {
		if len(p.args) > 1 && p.args[1] == "fused" && isLazysnap(p.pid, l.Bin) {
			return p.pid
		}
	}
	return 0
}

// copyLogs copies serve's and fused's logs into l.keepLog (see
// WithLogsKept). A fused that never started has no log.
func (l *Lazysnap) copyLogs() error {
	if err := os.MkdirAll(l.keepLog, 0o755); err != nil {
		return err
	}
	for src, name := range map[string]string{l.logPath: "lazysnap.log", filepath.Join(l.Root, "fused.log"): "fused.log"} {
		b, err := os.ReadFile(src)
		if errors.Is(err, fs.ErrNotExist) && name == "fused.log" {
			continue
		}
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(l.keepLog, name), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}
