package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/lazysnap/lazysnap/internal/testenv"
)

// startNode starts a cold node for one case: a fresh containerd with its
// own root and, for lazysnap modes, a fresh lazysnap serve (and the fused
// helper it starts) with an empty cache. tb's cleanup tears it down,
// keeping lazysnap's logs under logName when WithLogDir asks for them.
func (e *env) startNode(tb testing.TB, m Mode, logName string) *testenv.Containerd {
	tb.Helper()
	opts := []testenv.ContainerdOption{testenv.WithRegistryHost(e.proxy.Host)}
	switch {
	case m.usesLazysnap():
		opts = append(opts, testenv.WithLazysnap())
	case m == External:
		opts = append(opts, testenv.WithProxySnapshotter(externalSnapshotter))
	case m.usesStargz():
		opts = append(opts, testenv.WithProxySnapshotter(stargzSnapshotter))
	case m == Soci:
		opts = append(opts, testenv.WithProxySnapshotter(sociSnapshotter))
	}
	cd := testenv.StartContainerd(tb, opts...)
	e.footprint.addNode(cd)
	switch {
	case m.usesLazysnap():
		cfg := fmt.Sprintf("hosts_dir = %q\n", cd.HostsDir)
		lopts := []testenv.LazysnapOption{testenv.WithLazysnapConfig(cfg)}
		if m == Baseline {
			lopts = []testenv.LazysnapOption{testenv.WithLazysnapConfig(cfg + e.baselineConfig),
				testenv.WithLazysnapBinary(e.baselineBin)}
		}
		if e.logDir != "" {
			lopts = append(lopts, testenv.WithLogsKept(filepath.Join(e.logDir, logName)))
		}
		testenv.StartLazysnap(tb, cd, lopts...)
	case m.usesStargz():
		startStargz(tb, cd, e.proxy.Host)
	case m == Soci:
		startSoci(tb, cd, e.proxy.Host)
	case m == External:
		// containerd dials a proxy plugin on first use, so linking its
		// socket path to the other snapshotter's socket now is enough.
		if err := os.Symlink(e.externalSocket, cd.Proxy.Socket); err != nil {
			tb.Fatalf("linking the external snapshotter's socket: %v", err)
		}
	}
	return cd
}
