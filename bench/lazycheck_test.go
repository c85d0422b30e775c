package bench

import (
	"strings"
	"testing"

	"github.com/lazysnap/lazysnap/internal/testenv"
)

// TestCheckMountedLazilyRefusesNoFused: a lazysnap case whose fused is not
// there (it could not start, so serve pulled every layer) is an error, not
// a measure of the mode; a mode that is no lazysnap mode is not asked.
// TestHarness covers the other side: every lazysnap mode passes the check
// with real parts.
func TestCheckMountedLazilyRefusesNoFused(t *testing.T) {
	cd := &testenv.Containerd{Proxy: &testenv.ProxySnapshotter{Root: t.TempDir()}}
	e := &env{}
	for _, m := range []Mode{Lazy, Traced, ZstdChunked, Baseline} {
		if err := e.checkMountedLazily(t.Context(), cd, m); err == nil || !strings.Contains(err.Error(), "pulled in full") {
			t.Errorf("%s without fused: %v, want an error", m, err)
		}
	}
	for _, m := range []Mode{Overlayfs, Local, Stargz, Soci} {
		if err := e.checkMountedLazily(t.Context(), cd, m); err != nil {
			t.Errorf("%s: %v", m, err)
		}
	}
	e.baselineConfig = "fuse_manager = false"
	if err := e.checkMountedLazily(t.Context(), cd, Baseline); err != nil {
		t.Errorf("baseline with its mounts in serve: %v", err)
	}
}
