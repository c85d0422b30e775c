package convert

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"

	"github.com/containerd/errdefs"
	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/containerd/stargz-snapshotter/estargz/zstdchunked"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"

	"github.com/lazysnap/lazysnap/prefetchlist"
)

// layerJob is one layer of an image being converted.
type layerJob struct {
	index  int
	desc   v1.Descriptor
	layer  v1.Layer
	diffID v1.Hash // from the source config
	keep   bool    // already in the wanted format: kept byte for byte

	staged  *stagedLayer
	tarPath string
	first   *firstPart // the first part, built while staging, or nil
	built   *built
}

// convert converts img in three steps: read every layer (checking it and
// unpacking it to a temporary tar), plan where prioritized files go (which
// needs every layer's entries), then build the new layers. Reading and
// building run for several layers at once.
func (c *Converter) convert(ctx context.Context, img v1.Image) (v1.Image, error) {
	m, err := img.Manifest()
	if err != nil {
		return nil, fmt.Errorf("reading the manifest: %w", err)
	}
	jobs, err := c.jobs(img, m)
	if err != nil {
		return nil, err
	}
	defer removeStaged(jobs)
	if allKept(jobs) {
		return img, nil
	}
	if err := c.forEach(ctx, jobs, c.needsRead, c.read); err != nil {
		return nil, err
	}
	plans := c.plan(jobs)
	err = c.forEach(ctx, jobs, func(j *layerJob) bool { return !j.keep }, func(ctx context.Context, j *layerJob) error {
		return c.build(ctx, j, plans[j.index], m.MediaType)
	})
	if err != nil {
		return nil, err
	}
	return c.assemble(img, m, jobs)
}

// jobs lists the layers of img with what the source says about them.
func (c *Converter) jobs(img v1.Image, m *v1.Manifest) ([]*layerJob, error) {
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("reading the image config: %w", err)
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, fmt.Errorf("listing layers: %w", err)
	}
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) || len(layers) != len(m.Layers) {
		return nil, fmt.Errorf("the manifest lists %d layers but the config %d diff_ids: %w",
			len(m.Layers), len(cfg.RootFS.DiffIDs), errdefs.ErrInvalidArgument)
	}
	jobs := make([]*layerJob, len(m.Layers))
	for i, desc := range m.Layers {
		if !supported(desc.MediaType) {
			return nil, layerErr(desc.Digest, "", fmt.Errorf("unsupported layer media type %q: %w", desc.MediaType, errdefs.ErrInvalidArgument))
		}
		jobs[i] = &layerJob{index: i, desc: desc, layer: layers[i], diffID: cfg.RootFS.DiffIDs[i], keep: c.converted(desc)}
	}
	return jobs, nil
}

func supported(mt types.MediaType) bool {
	switch mt {
	case types.DockerLayer, types.DockerUncompressedLayer, types.OCILayer, types.OCILayerZStd, types.OCIUncompressedLayer:
		return true
	}
	return false
}

// converted tells whether a layer already has the wanted format; the TOC
// annotation is what snapshotters go by, so it is what is checked.
func (c *Converter) converted(desc v1.Descriptor) bool {
	if c.opts.format == FormatZstdChunked {
		return desc.MediaType == types.OCILayerZStd && desc.Annotations[zstdchunked.ManifestChecksumAnnotation] != ""
	}
	return (desc.MediaType == types.OCILayer || desc.MediaType == types.DockerLayer) &&
		desc.Annotations[estargz.TOCJSONDigestAnnotation] != ""
}

func allKept(jobs []*layerJob) bool {
	for _, j := range jobs {
		if !j.keep {
			return false
		}
	}
	return true
}

// needsRead tells whether a layer must be read: to rebuild it, or, for a
// kept layer, to know its entries when prioritized files are placed.
func (c *Converter) needsRead(j *layerJob) bool {
	return !j.keep || len(c.opts.prioritized) > 0
}

// forEach runs fn for the jobs that want it, c.opts.concurrency at a time,
// and stops at the first error.
func (c *Converter) forEach(ctx context.Context, jobs []*layerJob, want func(*layerJob) bool, fn func(context.Context, *layerJob) error) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(c.opts.concurrency)
	for _, j := range jobs {
		if !want(j) {
			continue
		}
		g.Go(func() error { return fn(ctx, j) })
	}
	return g.Wait()
}

func removeStaged(jobs []*layerJob) {
	for _, j := range jobs {
		if j.first != nil {
			j.first.close()
		}
		if j.tarPath != "" {
			os.Remove(j.tarPath)
		}
	}
}

// read streams a source layer through the checks into a temporary tar (or
// nowhere, for a kept layer) and compares its content with the diff_id.
func (c *Converter) read(ctx context.Context, j *layerJob) (err error) {
	defer func() {
		if err != nil {
			err = asLayerErr(j.desc.Digest, err)
		}
	}()
	rc, err := j.layer.Compressed()
	if err != nil {
		return fmt.Errorf("fetching: %w", err)
	}
	defer rc.Close()
	counted := &progressReader{r: rc, ctx: ctx, report: func(n int64) {
		c.opts.progress.Update(LayerStatus{Index: j.index, Source: j.desc.Digest, Phase: PhaseRead, Done: n, Total: j.desc.Size})
	}}
	tr, err := decompress(counted)
	if err != nil {
		return fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
	}
	defer tr.Close()
	ra := startReadAhead(tr, rc, 4, 256<<10)
	defer ra.Close()
	var w io.Writer = io.Discard
	var wb *writeBehind
	var onEntry func(*tar.Header, int64)
	if !j.keep {
		f, err := os.CreateTemp(c.dir, "tar-*")
		if err != nil {
			return err
		}
		defer f.Close()
		j.tarPath = f.Name()
		var dst io.Writer = f
		if len(c.opts.prioritized) == 0 {
			g, err := newGrowingFile(f)
			if err != nil {
				return err
			}
			defer g.finish()
			j.first = c.startFirstPart(g)
			dst, onEntry = g, j.first.add
		}
		wb = startWriteBehind(dst, writeBehindBuffers, writeBehindSize)
		defer wb.Close()
		w = wb
	}
	if j.staged, err = stage(ra, w, onEntry); err != nil {
		return err
	}
	if wb != nil {
		if err := wb.Close(); err != nil {
			return fmt.Errorf("staging: %w", err)
		}
	}
	if j.staged.diffID != j.diffID {
		return fmt.Errorf("uncompressed content %s does not match the config's diff_id %s: %w", j.staged.diffID, j.diffID, errdefs.ErrDataLoss)
	}
	return nil
}

// asLayerErr names the layer (and the entry, when known) in err.
func asLayerErr(layer v1.Hash, err error) error {
	var le *LayerError
	if errors.As(err, &le) {
		return err
	}
	var ee *entryError
	if errors.As(err, &ee) {
		return layerErr(layer, ee.entry, ee.err)
	}
	return layerErr(layer, "", err)
}

// plan places the prioritized files and warns about those it cannot place.
func (c *Converter) plan(jobs []*layerJob) []layerPlan {
	if len(c.opts.prioritized) == 0 {
		return make([]layerPlan, len(jobs))
	}
	staged := make([]*stagedLayer, len(jobs))
	movable := make([]bool, len(jobs))
	for i, j := range jobs {
		staged[i], movable[i] = j.staged, !j.keep
	}
	plans, skipped := planPriorities(staged, movable, c.opts.prioritized, c.opts.ranges)
	for _, p := range c.opts.prioritized {
		if why, ok := skipped[p]; ok {
			c.opts.warn("prioritized file not placed", "path", p, "reason", why)
		}
	}
	return plans
}

func (c *Converter) build(ctx context.Context, j *layerJob, plan layerPlan, manifestType types.MediaType) error {
	c.opts.progress.Update(LayerStatus{Index: j.index, Source: j.desc.Digest, Phase: PhaseBuild})
	var b *built
	err := errStreamAborted
	if j.first != nil {
		b, err = c.buildStreamed(ctx, j, c.layerMediaType(manifestType))
	}
	if errors.Is(err, errStreamAborted) {
		b, err = c.buildLayer(ctx, j.tarPath, plan, c.layerMediaType(manifestType))
	}
	if err != nil {
		return asLayerErr(j.desc.Digest, fmt.Errorf("building: %w", err))
	}
	if plan.label != "" {
		b.annotations[prefetchlist.LayerAnnotation] = plan.label
	}
	b.ranged = plan.ranged
	os.Remove(j.tarPath)
	j.tarPath, j.built = "", b
	c.opts.progress.Update(LayerStatus{Index: j.index, Source: j.desc.Digest, Phase: PhaseDone, Result: &LayerResult{
		Source: j.desc.Digest, Digest: b.digest, DiffID: b.diffID, MediaType: b.mediaType, Size: b.size,
		TOCDigest: b.annotations[estargz.TOCJSONDigestAnnotation], Prioritized: b.prioritized, Ranged: b.ranged,
	}})
	return nil
}

// assemble makes the converted image: the source manifest with the new
// layer descriptors, and the source config with the new diff_ids.
func (c *Converter) assemble(img v1.Image, m *v1.Manifest, jobs []*layerJob) (v1.Image, error) {
	rawCfg, err := img.RawConfigFile()
	if err != nil {
		return nil, err
	}
	out := m.DeepCopy()
	layers := make(map[v1.Hash]partial.CompressedLayer)
	diffIDs := make([]v1.Hash, len(jobs))
	for i, j := range jobs {
		if j.keep {
			layers[j.desc.Digest], diffIDs[i] = j.layer, j.diffID
			c.opts.progress.Update(LayerStatus{Index: i, Source: j.desc.Digest, Phase: PhaseKept, Result: &LayerResult{
				Source: j.desc.Digest, Digest: j.desc.Digest, DiffID: j.diffID, MediaType: j.desc.MediaType, Size: j.desc.Size,
				TOCDigest: j.desc.Annotations[estargz.TOCJSONDigestAnnotation],
			}})
			continue
		}
		b := j.built
		ann := make(map[string]string, len(j.desc.Annotations)+len(b.annotations))
		for k, v := range j.desc.Annotations {
			// The source's ranges were planned for its blob; this
			// conversion plans its own.
			if k != prefetchlist.LayerAnnotation {
				ann[k] = v
			}
		}
		for k, v := range b.annotations {
			ann[k] = v
		}
		out.Layers[i] = v1.Descriptor{MediaType: b.mediaType, Size: b.size, Digest: b.digest, Annotations: ann}
		layers[b.digest], diffIDs[i] = &fileLayer{b: b}, b.diffID
	}
	cfg, err := withDiffIDs(rawCfg, diffIDs)
	if err != nil {
		return nil, err
	}
	mt := m.MediaType
	if c.opts.format == FormatZstdChunked && mt == types.DockerManifestSchema2 {
		// Docker's manifest has no zstd layer type: zstd:chunked needs OCI.
		mt, out.MediaType, out.Config.MediaType = types.OCIManifestSchema1, types.OCIManifestSchema1, types.OCIConfigJSON
	}
	if mt == "" {
		if mt, err = img.MediaType(); err != nil {
			return nil, err
		}
	}
	sum := sha256.Sum256(cfg)
	out.Config.Digest = v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", sum)}
	out.Config.Size = int64(len(cfg))
	raw, err := json.Marshal(out)
	if err != nil {
		return nil, err
	}
	return partial.CompressedToImage(&image{manifest: raw, config: cfg, mediaType: mt, layers: layers})
}

// progressReader counts bytes read, reports every few MiB, and stops when
// ctx is done.
type progressReader struct {
	r      io.Reader
	ctx    context.Context
	n      atomic.Int64
	last   int64
	report func(int64)
}

const progressStep = 4 << 20

func (p *progressReader) Read(b []byte) (int, error) {
	if err := p.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := p.r.Read(b)
	total := p.n.Add(int64(n))
	if total-p.last >= progressStep || (err == io.EOF && total != p.last) {
		p.last = total
		p.report(total)
	}
	return n, err
}
