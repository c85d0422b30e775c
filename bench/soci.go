package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/lazysnap/lazysnap/internal/testenv"
)

// sociSnapshotter is the proxy plugin name of the SOCI snapshotter, as its
// own documentation configures containerd.
const sociSnapshotter = "soci"

// sociPeer is our build of the SOCI snapshotter (tools/peers/soci): its
// daemon (serve) and its index builder (convert).
const sociPeer = "soci-peer"

// startSoci starts a fresh SOCI snapshotter for cd (started
// WithProxySnapshotter(sociSnapshotter)) with the node's own empty root.
// Its default content store is containerd's, but through a proxy plugin
// its batches get no namespace ("namespace is required"), so it keeps its
// artifacts in its own store, under the root; the registry at host is its
// own insecure mirror.
func startSoci(tb testing.TB, cd *testenv.Containerd, host string) *testenv.Peer {
	tb.Helper()
	cfg := filepath.Join(tb.TempDir(), "soci.toml")
	if err := os.WriteFile(cfg, []byte(sociConfig(host)), 0o644); err != nil {
		tb.Fatalf("writing soci config: %v", err)
	}
	return testenv.StartPeer(tb, cd, testenv.Tool(tb, sociPeer), "serve",
		"--address", cd.Proxy.Socket, "--root", cd.Proxy.Root, "--config", cfg, "--log-level", "warn")
}

// sociConfig: unlike the stargz snapshotter's, SOCI's mirror host is parsed
// as a URL, so it carries its scheme.
func sociConfig(host string) string {
	return fmt.Sprintf("[content_store]\ntype = \"soci\"\n\n"+
		"[[resolver.host.%q.mirrors]]\nhost = %q\ninsecure = true\n", host, "http://"+host)
}

// sociConvert makes the SOCI image as a SOCI user would with `soci
// convert`: on a scratch node (a fresh containerd, unmeasured, on the
// unshaped link) it pulls ref, the gzip source, builds its SOCI index with
// upstream's defaults and writes the converted image (the original
// manifest, annotated, and the index) as an OCI archive to path.
func (e *env) sociConvert(ctx context.Context, tb testing.TB, w Workload, ref, path string) error {
	e.logger.Info("building the SOCI index on a scratch node", "workload", w.Name)
	s := &scope{TB: tb}
	defer s.close()
	cd, err := e.scratchNodeWith(ctx, s, w, ref)
	if err != nil {
		return err
	}
	args := []string{"convert", "--address", cd.Address, "--namespace", cd.Namespace, "--src", ref,
		"--out", path, "--db-dir", s.TempDir()}
	cmd := exec.CommandContext(ctx, testenv.Tool(tb, sociPeer), args...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s %v: %w\n%s", sociPeer, args, err, tail(b, 3000))
	}
	return nil
}
