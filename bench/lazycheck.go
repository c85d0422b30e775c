package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/lazysnap/lazysnap/internal/fused"
	"github.com/lazysnap/lazysnap/internal/testenv"
)

// checkMountedLazily fails a lazysnap case none of whose layers lazysnap
// mounted: when fused cannot start, or refuses every layer, serve pulls the
// layers in full, as it should, and the case would be measured and
// reported as the mode. (A case named long enough once put fused's socket
// past the length a unix socket path may have, and make bench reported a
// full pull as lazysnap-zstdchunked's time.) A baseline whose config moves
// the mounts into serve (fuse_manager) has no fused to ask.
func (e *env) checkMountedLazily(ctx context.Context, cd *testenv.Containerd, m Mode) error {
	if !m.usesLazysnap() || m == Baseline && strings.Contains(e.baselineConfig, "fuse_manager") {
		return nil
	}
	raw, err := fused.NewClient(filepath.Join(cd.Proxy.Root, "fused.sock")).Stats(ctx)
	if err != nil {
		return fmt.Errorf("%s: asking lazysnap fused for its layers: %w (every layer was pulled in full)", m, err)
	}
	var layers []json.RawMessage
	if err := json.Unmarshal(raw, &layers); err != nil {
		return fmt.Errorf("%s: decoding fused's layers: %w", m, err)
	}
	if len(layers) == 0 {
		return fmt.Errorf("%s: lazysnap mounted no layer: every layer was pulled in full, which measures no lazy mode", m)
	}
	return nil
}
