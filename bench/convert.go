package bench

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/lazysnap/lazysnap/internal/testenv"
)

// converter makes each mode's image of a workload with lazyconv, and keeps
// it as an OCI layout in a cache folder keyed by the source digest, the
// mode, the workload and the lazyconv binary itself, so that a rebuilt
// converter never serves stale conversions. The traced conversion's key
// also has the lazysnap binary, which recorded the trace.
type converter struct {
	cacheDir    string
	lazyconv    string
	runc        string
	binSum      string
	lazysnapSum string
	// peerSums are, by conversion, the digests of the peers' own tools
	// that make it instead of lazyconv ("" if not installed).
	peerSums map[string]string
}

// peerConversions names the tool (in the tools dir) that makes each
// conversion a peer makes itself, as its users would.
func peerConversions() map[string]string {
	return map[string]string{"stargz-optimized": stargzOptimizer, "soci": sociPeer}
}

func newConverter(cacheDir, lazyconv, lazysnap, runc, toolsDir string) (*converter, error) {
	sum, err := fileSHA256(lazyconv)
	if err != nil {
		return nil, fmt.Errorf("hashing lazyconv: %w", err)
	}
	lsSum, err := fileSHA256(lazysnap)
	if err != nil {
		return nil, fmt.Errorf("hashing lazysnap: %w", err)
	}
	peerSums := map[string]string{}
	for conv, tool := range peerConversions() {
		peerSums[conv], _ = fileSHA256(filepath.Join(toolsDir, tool)) // checked when the mode runs
	}
	return &converter{cacheDir: cacheDir, lazyconv: lazyconv, runc: runc, binSum: sum, lazysnapSum: lsSum,
		peerSums: peerSums}, nil
}

// traceFunc records the workload's trace and writes it, in the
// --prioritize format, to the file at path; for the conversions a peer's
// tool makes (stargz-optimized, soci) it writes the image, an OCI archive,
// there instead. It is called only when the conversion is not cached,
// since it runs a node.
type traceFunc func(ctx context.Context, path string) error

// publish converts src for mode (or reuses the cached conversion) and
// pushes the result to dst, a plain-HTTP registry reference. learn is used
// by the traced mode and the peers' conversions only.
func (c *converter) publish(ctx context.Context, w Workload, src *testenv.Image, m Mode, dst string, learn traceFunc) error {
	dir := filepath.Join(c.cacheDir, c.key(w, src.Digest, m))
	if _, err := os.Stat(filepath.Join(dir, "index.json")); err != nil {
		if err := c.convert(ctx, w, src.Ref, m, dir, learn); err != nil {
			return err
		}
	}
	return pushLayout(dir, dst)
}

func (c *converter) key(w Workload, srcDigest string, m Mode) string {
	h := sha256.New()
	cmd, _ := json.Marshal(w.Cmd)
	fmt.Fprintf(h, "%s\n%s\n%s\n%s\n%s\n", c.binSum, srcDigest, m.conversion(), cmd, w.recordLine())
	if m.traced() {
		// The trace depends on the recorder and on when the run stopped
		// (ready); the other keys stay as they were, so rebuilding
		// lazysnap keeps their cached conversions.
		fmt.Fprintf(h, "%s\n%s\n", c.lazysnapSum, w.Ready)
	}
	if sum, ok := c.peerSums[m.conversion()]; ok {
		fmt.Fprintf(h, "%s\n", sum)
	}
	return hex.EncodeToString(h.Sum(nil))[:32]
}

// tracePath is where the trace a traced conversion was made from is kept,
// beside its layout, for a look at what was prioritized.
func tracePath(layoutDir string) string { return layoutDir + ".trace.txt" }

// convert writes the conversion to a temporary layout renamed to dir only
// once complete, so an interrupted run leaves no half layout in the cache.
func (c *converter) convert(ctx context.Context, w Workload, src string, m Mode, dir string, learn traceFunc) error {
	if err := os.MkdirAll(c.cacheDir, 0o755); err != nil {
		return fmt.Errorf("creating conversion cache: %w", err)
	}
	tmp, err := os.MkdirTemp(c.cacheDir, ".converting-")
	if err != nil {
		return fmt.Errorf("creating conversion dir: %w", err)
	}
	defer os.RemoveAll(tmp)
	if _, ok := c.peerSums[m.conversion()]; ok {
		return c.convertWith(ctx, learn, tmp, dir)
	}
	out := filepath.Join(tmp, "layout")
	trace := filepath.Join(tmp, "trace.txt")
	if m.traced() {
		if learn == nil {
			return fmt.Errorf("mode %s needs a trace", m)
		}
		if err := learn(ctx, trace); err != nil {
			return fmt.Errorf("recording the trace: %w", err)
		}
	}
	args, err := c.args(w, src, m, "oci:"+out, trace)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, c.lazyconv, args...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("lazyconv %v: %w\n%s", args, err, tail(b, 3000))
	}
	if m.traced() {
		// Before the layout, whose index.json marks the entry complete.
		if err := os.Rename(trace, tracePath(dir)); err != nil {
			return fmt.Errorf("storing trace: %w", err)
		}
	}
	if err := os.Rename(out, dir); err != nil {
		return fmt.Errorf("storing conversion: %w", err)
	}
	return nil
}

// convertWith has a peer's tool (build) write the image as an OCI archive
// and unpacks it into the layout dir, the tool's record, if any, beside it
// (the stargz optimizer and SOCI make their own images, not lazyconv).
func (c *converter) convertWith(ctx context.Context, build traceFunc, tmp, dir string) error {
	if build == nil {
		return fmt.Errorf("no tool for this conversion")
	}
	archive := filepath.Join(tmp, "image.tar")
	if err := build(ctx, archive); err != nil {
		return fmt.Errorf("converting with the peer's tool: %w", err)
	}
	out := filepath.Join(tmp, "layout")
	if err := untar(archive, out); err != nil {
		return fmt.Errorf("unpacking the converted image: %w", err)
	}
	if err := os.Rename(recordPath(archive), tracePath(dir)); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("storing the record: %w", err)
	}
	if err := os.Rename(out, dir); err != nil {
		return fmt.Errorf("storing conversion: %w", err)
	}
	return nil
}

func (c *converter) args(w Workload, src string, m Mode, dst, trace string) ([]string, error) {
	switch m.conversion() {
	case "estargz":
		return []string{"convert", "--plain-http", "--quiet", src, dst}, nil
	case "estargz-traced":
		return []string{"convert", "--plain-http", "--quiet", "--prioritize", trace, src, dst}, nil
	case "zstd:chunked":
		return []string{"convert", "--plain-http", "--quiet", "--format", "zstd:chunked", src, dst}, nil
	case "zstd:chunked-traced":
		return []string{"convert", "--plain-http", "--quiet", "--format", "zstd:chunked", "--prioritize", trace, src, dst}, nil
	case "estargz-optimized":
		cmd, err := json.Marshal(w.Cmd)
		if err != nil {
			return nil, fmt.Errorf("encoding command: %w", err)
		}
		args := []string{"optimize", "--plain-http", "--quiet", "--runtime", c.runc, "--network",
			"--cmd", string(cmd), "--timeout", "60s"}
		if line := w.recordLine(); line != "" {
			args = append(args, "--wait-line", line)
		}
		return append(args, src, dst), nil
	}
	return nil, fmt.Errorf("mode %s has no conversion", m)
}

// conversion names the image format a mode runs.
func (m Mode) conversion() string {
	switch m {
	case Lazy, External, Baseline, Stargz, Shared:
		return "estargz"
	case Optimized:
		return "estargz-optimized"
	case StargzOptimized:
		return "stargz-optimized"
	case Soci:
		return "soci"
	case Traced:
		return "estargz-traced"
	case ZstdChunked:
		return "zstd:chunked"
	case TracedZstd:
		return "zstd:chunked-traced"
	}
	return ""
}

// pushLayout pushes the first manifest of the OCI layout at dir to ref,
// byte for byte, so the layer annotations (TOC digests) are kept.
func pushLayout(dir, ref string) error {
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return fmt.Errorf("reading layout %s: %w", dir, err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return fmt.Errorf("reading layout %s: %w", dir, err)
	}
	if len(m.Manifests) == 0 {
		return fmt.Errorf("layout %s holds no image", dir)
	}
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return fmt.Errorf("parsing %s: %w", ref, err)
	}
	d := m.Manifests[0]
	if d.MediaType.IsIndex() {
		child, err := idx.ImageIndex(d.Digest)
		if err != nil {
			return fmt.Errorf("reading index %s: %w", d.Digest, err)
		}
		return wrapPush(ref, remote.WriteIndex(r, child))
	}
	img, err := idx.Image(d.Digest)
	if err != nil {
		return fmt.Errorf("reading image %s: %w", d.Digest, err)
	}
	return wrapPush(ref, remote.Write(r, img))
}

func wrapPush(ref string, err error) error {
	if err != nil {
		return fmt.Errorf("pushing %s: %w", ref, err)
	}
	return nil
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
