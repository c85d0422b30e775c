package bench

import (
	"archive/tar"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/internal/testenv"
)

// usesStargz says whether the case starts the stargz snapshotter.
func (m Mode) usesStargz() bool { return m.snapshotter() == stargzSnapshotter }

// startStargz starts a fresh containerd-stargz-grpc for cd (started
// WithProxySnapshotter(stargzSnapshotter)): its root is the node's own,
// empty, so nothing is cached, and it reaches the registry at host over
// plain HTTP. Every other setting is upstream's default, as a user who
// installs it gets.
func startStargz(tb testing.TB, cd *testenv.Containerd, host string) *testenv.Peer {
	tb.Helper()
	cfg := filepath.Join(tb.TempDir(), "stargz.toml")
	if err := os.WriteFile(cfg, []byte(stargzConfig(host)), 0o644); err != nil {
		tb.Fatalf("writing stargz config: %v", err)
	}
	return testenv.StartPeer(tb, cd, testenv.Tool(tb, "containerd-stargz-grpc"),
		"--address", cd.Proxy.Socket, "--root", cd.Proxy.Root, "--config", cfg, "--log-level", "warn")
}

// stargzConfig names host as its own insecure mirror: the snapshotter
// speaks plain HTTP only to localhost by itself, and the bench's registry
// may be reached by another address.
func stargzConfig(host string) string {
	return fmt.Sprintf("[[resolver.host.%q.mirrors]]\nhost = %q\ninsecure = true\n", host, host)
}

// stargzOptimizer is the stargz snapshotter's optimizer (upstream's
// analyzer and converter), built by script/install-deps.sh.
const stargzOptimizer = "stargz-optimize"

// stargzRecordPeriod bounds the optimizer's recording, as lazyconv
// optimize's --timeout does for the lazysnap-optimized conversion.
const stargzRecordPeriod = 60 * time.Second

// stargzOptimize makes the stargz-optimized image as a stargz user would
// with `ctr-remote image optimize`: on a scratch node (a fresh containerd,
// unmeasured, on the unshaped link) it pulls ref, the gzip source, and runs
// the peer's optimizer, which records the files the workload opens until
// its record line (or the period) and converts each layer with them first.
// The OCI archive goes to path, the record to recordPath(path). The node is
// torn down before stargzOptimize returns.
func (e *env) stargzOptimize(ctx context.Context, tb testing.TB, w Workload, ref, path string) error {
	e.logger.Info("recording and converting with the stargz optimizer on a scratch node", "workload", w.Name)
	s := &scope{TB: tb}
	defer s.close()
	cd, err := e.scratchNodeWith(ctx, s, w, ref)
	if err != nil {
		return err
	}
	argv, err := json.Marshal(w.Cmd)
	if err != nil {
		return fmt.Errorf("encoding command: %w", err)
	}
	args := []string{"--address", cd.Address, "--namespace", cd.Namespace, "--src", ref, "--out", path,
		"--record-out", recordPath(path), "--cmd", string(argv), "--period", stargzRecordPeriod.String()}
	if line := w.recordLine(); line != "" {
		args = append(args, "--wait-line", line)
	}
	cmd := exec.CommandContext(ctx, testenv.Tool(tb, stargzOptimizer), args...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s %v: %w\n%s", stargzOptimizer, args, err, tail(b, 3000))
	}
	return nil
}

// recordPath is where the optimizer's record of the archive at path goes.
func recordPath(path string) string { return path + ".record.json" }

// untar unpacks the OCI archive at path into dir (an OCI layout: regular
// files and directories only).
func untar(path, dir string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading %s: %w", path, err)
		}
		if err := untarEntry(tr, h, dir); err != nil {
			return err
		}
	}
}

func untarEntry(tr *tar.Reader, h *tar.Header, dir string) error {
	name := filepath.Join(dir, filepath.Clean("/"+h.Name))
	switch h.Typeflag {
	case tar.TypeDir:
		return os.MkdirAll(name, 0o755)
	case tar.TypeReg:
		if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
			return err
		}
		out, err := os.Create(name)
		if err != nil {
			return err
		}
		_, err = io.Copy(out, tr)
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		return err
	}
	return fmt.Errorf("unexpected entry %s (type %c) in the OCI archive", h.Name, h.Typeflag)
}

// scratchNodeWith starts a scratch node for a peer's conversion (a fresh
// containerd, unmeasured, on the unshaped link, torn down with s) and pulls
// ref, the gzip source, onto it.
func (e *env) scratchNodeWith(ctx context.Context, s *scope, w Workload, ref string) (*testenv.Containerd, error) {
	cd := testenv.StartContainerd(s, testenv.WithRegistryHost(e.proxy.Host))
	e.footprint.addNode(cd)
	if err := e.pull(ctx, cd, benchCase{workload: w, mode: Overlayfs, ref: ref}); err != nil {
		return nil, err
	}
	return cd, nil
}
