package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

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
