package bench

import (
	"fmt"
	"slices"
	"strings"
)

// Mode is one way of getting an image onto a node.
type Mode string

const (
	// Overlayfs pulls the gzip image in full with the overlayfs snapshotter.
	Overlayfs Mode = "overlayfs"
	// Lazy runs the plain eStargz conversion on lazysnap.
	Lazy Mode = "lazysnap"
	// Optimized runs the eStargz conversion with the workload's start-up
	// files first (lazyconv optimize) on lazysnap.
	Optimized Mode = "lazysnap-optimized"
	// Traced runs the eStargz conversion prioritized by the trace lazysnap
	// recorded on a scratch node running the plain conversion, as a user
	// would learn it on a staging node (lazysnap trace export).
	Traced Mode = "lazysnap-traced"
	// Shared runs the plain eStargz conversion on lazysnap, which learns the
	// start-up order at mount from the trace a scratch node recorded and
	// pushed to the image's repository (lazysnap trace export --push), as
	// a fleet would share it without converting again.
	Shared Mode = "lazysnap-shared"
	// ZstdChunked runs the zstd:chunked conversion on lazysnap.
	ZstdChunked Mode = "lazysnap-zstdchunked"
	// TracedZstd is Traced in zstd:chunked: the zstd:chunked conversion
	// prioritized by the trace a scratch node recorded running the plain
	// one (lazyconv convert --format zstd:chunked --prioritize).
	TracedZstd Mode = "lazysnap-traced-zstdchunked"
	// External runs the plain eStargz conversion on another snapshotter,
	// reached at a socket the user gives.
	External Mode = "external"
	// Baseline runs the plain eStargz conversion on another build of
	// lazysnap (an older release, or main before a change), so that a change
	// is measured side by side with what it replaces, in one run.
	Baseline Mode = "lazysnap-baseline"
	// Stargz runs the plain eStargz conversion on the stargz snapshotter
	// (containerd-stargz-grpc, built by script/install-deps.sh at a pinned
	// version), started fresh per case like lazysnap.
	Stargz Mode = "stargz"
	// StargzOptimized runs the conversion with the workload's start-up
	// files first (the lazysnap-optimized image, standard eStargz with a
	// prefetch landmark) on the stargz snapshotter.
	StargzOptimized Mode = "stargz-optimized"
	// Soci runs the gzip original with a SOCI index (soci convert) on the
	// SOCI snapshotter (soci-peer serve, built by script/install-deps.sh at
	// a pinned version), started fresh per case like lazysnap.
	Soci Mode = "soci"
	// Local pulls the gzip original in full with overlayfs before the clock
	// starts and drops the page cache: the cold local start that the
	// physical floor (see Floor) counts. Its time is create plus run.
	Local Mode = "local"
)

// allModes lists every mode, in the order the usage message names them.
func allModes() []Mode {
	return []Mode{Overlayfs, Lazy, Optimized, Traced, Shared, ZstdChunked, TracedZstd, External, Baseline, Stargz, StargzOptimized, Soci, Local}
}

// DefaultModes are the modes a run has unless told otherwise; External is
// added when a snapshotter socket is given.
func DefaultModes() []Mode { return []Mode{Overlayfs, Lazy, Optimized, Traced, ZstdChunked} }

// ParseModes reads a comma-separated list of mode names.
func ParseModes(s string) ([]Mode, error) {
	var modes []Mode
	for _, name := range strings.Split(s, ",") {
		m := Mode(strings.TrimSpace(name))
		if !slices.Contains(allModes(), m) {
			return nil, fmt.Errorf("unknown mode %q (want one of %v)", m, allModes())
		}
		modes = append(modes, m)
	}
	return modes, nil
}

// snapshotter is the containerd snapshotter the mode pulls into.
func (m Mode) snapshotter() string {
	switch m {
	case Overlayfs, Local:
		return "overlayfs"
	case External:
		return externalSnapshotter
	case Stargz, StargzOptimized:
		return stargzSnapshotter
	case Soci:
		return sociSnapshotter
	}
	return "lazysnap"
}

// lazy says whether the mode fetches the image lazily.
func (m Mode) lazy() bool { return m != Overlayfs && m != Local }

// traced reports whether m's conversion is prioritized by a trace a
// scratch node recorded running plainOf's conversion.
func (m Mode) traced() bool { return m == Traced || m == TracedZstd }

// plainOf is the mode whose image a traced mode's trace is recorded on.
func (m Mode) plainOf() Mode {
	if m == TracedZstd {
		return ZstdChunked
	}
	return Lazy
}

// usesLazysnap says whether the case starts a lazysnap serve.
func (m Mode) usesLazysnap() bool { return m.snapshotter() == "lazysnap" }

// externalSnapshotter is the proxy plugin name the other snapshotter gets
// in the benchmark's containerd.
const externalSnapshotter = "external"

// stargzSnapshotter is the proxy plugin name of the stargz snapshotter, as
// its own documentation configures containerd.
const stargzSnapshotter = "stargz"

// rotate returns modes starting at index n (mod len): the order changes per
// repetition so that drift of the machine hits every mode alike.
func rotate(modes []Mode, n int) []Mode {
	if len(modes) == 0 {
		return nil
	}
	n %= len(modes)
	return append(append([]Mode{}, modes[n:]...), modes[:n]...)
}
