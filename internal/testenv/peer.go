package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// Peer is another project's proxy snapshotter daemon (the stargz
// snapshotter's containerd-stargz-grpc, say) serving a test containerd's
// proxy plugin (see WithProxySnapshotter), so that a benchmark runs it the
// way it runs lazysnap: fresh per node, with the node's socket and root.
type Peer struct {
	// Socket is the gRPC socket containerd dials (Proxy.Socket).
	Socket string
	// Root is the daemon's root directory (Proxy.Root).
	Root string

	t       testing.TB
	cd      *Containerd
	logPath string
	cmd     *exec.Cmd
	exited  chan struct{}
}

// peerReadyTimeout bounds the wait until containerd reaches the daemon.
const peerReadyTimeout = 60 * time.Second

// StartPeer starts bin with args (which name cd.Proxy.Socket and
// cd.Proxy.Root in the daemon's own flags) for cd, which must have been
// started WithProxySnapshotter, and waits until containerd reaches it.
// Cleanup stops the containers first (they read from its mounts), then the
// daemon's process group, then unmounts what is left in Root.
func StartPeer(t testing.TB, cd *Containerd, bin string, args ...string) *Peer {
	t.Helper()
	if cd.Proxy == nil {
		t.Fatal("StartPeer needs a containerd started WithProxySnapshotter")
	}
	p := &Peer{Socket: cd.Proxy.Socket, Root: cd.Proxy.Root, t: t, cd: cd,
		logPath: filepath.Join(t.TempDir(), filepath.Base(bin)+".log")}
	t.Cleanup(p.cleanup)
	if err := p.start(bin, args); err != nil {
		t.Fatal(err)
	}
	if err := p.waitReady(); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p *Peer) start(bin string, args []string) error {
	if err := os.MkdirAll(p.Root, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", p.Root, err)
	}
	logFile, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("opening peer log: %w", err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	setProcessGroup(cmd)
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("starting %s: %w", bin, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logFile.Close()
		close(exited)
	}()
	p.cmd, p.exited = cmd, exited
	return nil
}

func (p *Peer) waitReady() error {
	deadline := time.Now().Add(peerReadyTimeout)
	for {
		err := probeProxySnapshotter(p.cd, p.Socket)
		if err == nil {
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited: %s\n%s", p.cmd.Path, p.cmd.ProcessState, p.LogTail())
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("containerd did not reach %s within %s: %w\n%s", p.cmd.Path, peerReadyTimeout, err, p.LogTail())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// LogTail returns the end of the daemon's output.
func (p *Peer) LogTail() string {
	b, _ := os.ReadFile(p.logPath)
	return filepath.Base(p.cmd.Path) + " output:\n" + tail(b, 4000)
}

// cleanup stops the daemon with SIGTERM (it unmounts its layers on the way
// out), or kills its process group after 30 s.
func (p *Peer) cleanup() {
	p.cd.stopContainers()
	if p.cmd != nil {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(30 * time.Second):
			p.t.Logf("%s ignored SIGTERM for 30s; killing it", p.cmd.Path)
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.exited
		}
	}
	if err := UnmountUnder(p.Root); err != nil {
		p.t.Logf("peer cleanup: %v", err)
	}
	if p.t.Failed() && p.cmd != nil {
		p.t.Log(p.LogTail())
	}
}
