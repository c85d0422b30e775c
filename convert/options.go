package convert

import (
	"fmt"
	"runtime"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/lazysnap/lazysnap/prefetchlist"
)

// Format is the layer format a conversion produces.
type Format string

const (
	// FormatEStargz makes gzip-compressed eStargz layers.
	FormatEStargz Format = "estargz"
	// FormatZstdChunked makes zstd:chunked layers (an eStargz TOC in zstd frames).
	FormatZstdChunked Format = "zstd:chunked"
)

// ParseFormat returns the Format named s.
func ParseFormat(s string) (Format, error) {
	switch f := Format(s); f {
	case FormatEStargz, FormatZstdChunked:
		return f, nil
	}
	return "", fmt.Errorf("unknown layer format %q (want %q or %q): %w", s, FormatEStargz, FormatZstdChunked, errdefs.ErrInvalidArgument)
}

// Option configures a Converter.
type Option func(*options) error

type options struct {
	format       Format
	prioritized  []string
	ranges       map[string][]prefetchlist.Range
	concurrency  int
	chunkSize    int
	level        int
	buildParts   int
	layerWorkers int
	minSpan      int64
	workDir      string
	progress     Progress
	platform     *v1.Platform
	warn         func(msg string, args ...any)
}

// defaultOptions returns the options a Converter uses unless told otherwise.
func defaultOptions() options {
	return options{
		format:       FormatEStargz,
		concurrency:  runtime.GOMAXPROCS(0),
		chunkSize:    DefaultChunkSize, // The default is 1 MiB.
		level:        0,                // 0: the format's default, see WithCompressionLevel.
		buildParts:   4,
		layerWorkers: runtime.GOMAXPROCS(0),
		// minSpan is the least compressed size handed to one decoder when the
		// new blob is decoded for its diff_id: members of small files are
		// decoded in batches so that handing them over costs little.
		minSpan:  1 << 20,
		progress: nopProgress{},
		warn:     func(string, ...any) {},
	}
}

// WithFormat sets the layer format to produce. The default is FormatEStargz.
func WithFormat(f Format) Option {
	return func(o *options) error {
		if _, err := ParseFormat(string(f)); err != nil {
			return err
		}
		o.format = f
		return nil
	}
}

// WithPrioritizedFiles lists files of the image's root filesystem in the
// order a workload reads them. Each goes first in the layer that provides it,
// before the prefetch landmark. Paths missing from the image are reported
// through the warning function and otherwise ignored. The default is no
// prioritized files (each layer gets the no-prefetch landmark).
func WithPrioritizedFiles(paths []string) Option {
	return func(o *options) error {
		o.prioritized = append([]string(nil), paths...)
		return nil
	}
}

// WithPrioritizedRanges gives, for prioritized files (keyed by their path in
// the WithPrioritizedFiles list), the byte ranges of them the workload read,
// as a trace records them. A file of at least RangedMinSize whose ranges
// cover less than RangedMaxPercent of it is not put before the landmark:
// it stays in its place and its ranges go into the layer's
// prefetchlist.LayerAnnotation, from which the snapshotter prefetches
// only them. Files the annotation has no room for (prefetchlist.MaxLabelSize)
// are prioritized whole, as are files without ranges. The default is no
// ranges: every prioritized file is placed whole.
func WithPrioritizedRanges(ranges map[string][]prefetchlist.Range) Option {
	return func(o *options) error {
		o.ranges = make(map[string][]prefetchlist.Range, len(ranges))
		for p, rs := range ranges {
			o.ranges[p] = prefetchlist.Normalize(rs)
		}
		return nil
	}
}

// WithConcurrency sets how many layers convert at once. The default is
// runtime.GOMAXPROCS(0).
func WithConcurrency(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return fmt.Errorf("concurrency %d < 1: %w", n, errdefs.ErrInvalidArgument)
		}
		o.concurrency = n
		return nil
	}
}

// DefaultChunkSize is the default of WithChunkSize: a quarter of estargz's
// own default (4 MiB). A read of a large file then waits for the 1 MiB
// chunk it lands in, not for 4 MiB, and the snapshotter fetches the next
// chunks of the file, up to 4 MiB, in the same request (see the chunk
// window in docs/design.md), so a file costs no more round trips. The
// layers grow by about 0.1%.
const DefaultChunkSize = 1 << 20

// WithChunkSize sets the size of the chunks large files are split into. The
// default is DefaultChunkSize; 0 keeps estargz's own default (4 MiB).
func WithChunkSize(n int) Option {
	return func(o *options) error {
		if n < 0 {
			return fmt.Errorf("chunk size %d < 0: %w", n, errdefs.ErrInvalidArgument)
		}
		o.chunkSize = n
		return nil
	}
}

// WithCompressionLevel sets the gzip level (1-9) of eStargz layers, or the
// zstd level (1-22, mapped onto klauspost/compress levels) of zstd:chunked
// layers. The default is 6 for gzip (gzip.DefaultCompression: about four times
// as fast as estargz's own default of 9 for layers a few percent larger) and
// 3 (zstd's own default) for zstd:chunked.
func WithCompressionLevel(level int) Option {
	return func(o *options) error {
		if level < 1 || level > 22 {
			return fmt.Errorf("compression level %d out of range: %w", level, errdefs.ErrInvalidArgument)
		}
		o.level = level
		return nil
	}
}

// WithBuildParts sets into how many parts estargz splits each layer to
// compress them in parallel. The parts decide where compressed streams end,
// so the value is part of the output: it is fixed rather than taken from the
// machine's core count to keep digests identical everywhere. The default is 4.
func WithBuildParts(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return fmt.Errorf("build parts %d < 1: %w", n, errdefs.ErrInvalidArgument)
		}
		o.buildParts = n
		return nil
	}
}

// WithLayerWorkers sets how many goroutines decompress a new layer's members
// at once to compute its diff_id (estargz would decompress the whole layer on
// one core). It does not change the output. The default is
// runtime.GOMAXPROCS(0).
func WithLayerWorkers(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return fmt.Errorf("layer workers %d < 1: %w", n, errdefs.ErrInvalidArgument)
		}
		o.layerWorkers = n
		return nil
	}
}

// WithWorkDir sets the directory for temporary files (uncompressed tars and
// converted layers); the Converter makes its own directory inside it. The
// default is os.TempDir().
func WithWorkDir(dir string) Option {
	return func(o *options) error {
		o.workDir = dir
		return nil
	}
}

// WithProgress sets the receiver of per-layer progress. It is called from
// several goroutines at once. The default discards progress.
func WithProgress(p Progress) Option {
	return func(o *options) error {
		if p == nil {
			p = nopProgress{}
		}
		o.progress = p
		return nil
	}
}

// WithPlatform restricts Index to the manifests matching p (as
// go-containerregistry's platform matching: OS, architecture and, when set,
// variant and OS version). The default is every platform of the index.
func WithPlatform(p *v1.Platform) Option {
	return func(o *options) error {
		o.platform = p
		return nil
	}
}

// WithWarnFunc sets the function called with non-fatal problems, such as a
// prioritized path the image does not contain; args are slog key-value pairs.
// The default ignores warnings.
func WithWarnFunc(f func(msg string, args ...any)) Option {
	return func(o *options) error {
		if f == nil {
			f = func(string, ...any) {}
		}
		o.warn = f
		return nil
	}
}
