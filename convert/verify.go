package convert

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path"
	"runtime"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/containerd/stargz-snapshotter/estargz/zstdchunked"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	digest "github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"github.com/lazysnap/lazysnap/prefetchlist"
)

// Verify checks every layer of img is a lazily pullable layer whose parts
// all match their digests: the blob against its descriptor, the TOC against
// the TOC digest annotation, every chunk of every file against its TOC
// digest, the uncompressed tar against the config's diff_id, and the
// prefetch-ranges annotation, if any (verifyRanges). It returns
// what it found of each layer, and a *LayerError naming the layer and file
// at fault, with errdefs.ErrDataLoss for a mismatch,
// errdefs.ErrFailedPrecondition for a layer that is not eStargz and
// errdefs.ErrInvalidArgument for a ranges annotation that is not usable.
// Blobs are copied to temporary files in dir ("" for os.TempDir()).
func Verify(ctx context.Context, img v1.Image, dir string) ([]LayerResult, error) {
	m, err := img.Manifest()
	if err != nil {
		return nil, fmt.Errorf("reading the manifest: %w", err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("reading the image config: %w", err)
	}
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return nil, fmt.Errorf("the manifest lists %d layers but the config %d diff_ids: %w",
			len(m.Layers), len(cfg.RootFS.DiffIDs), errdefs.ErrInvalidArgument)
	}
	results := make([]LayerResult, len(m.Layers))
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(runtime.GOMAXPROCS(0))
	for i, desc := range m.Layers {
		g.Go(func() error {
			l, err := img.LayerByDigest(desc.Digest)
			if err != nil {
				return layerErr(desc.Digest, "", err)
			}
			res, err := verifyLayer(ctx, l, desc, cfg.RootFS.DiffIDs[i], dir)
			if err != nil {
				return asLayerErr(desc.Digest, err)
			}
			results[i] = *res
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return results, nil
}

func verifyLayer(ctx context.Context, l v1.Layer, desc v1.Descriptor, diffID v1.Hash, dir string) (*LayerResult, error) {
	f, err := fetchBlob(ctx, l, desc, dir)
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	sr := io.NewSectionReader(f, 0, desc.Size)
	r, err := estargz.Open(sr, estargz.WithDecompressors(new(zstdchunked.Decompressor)))
	ann, annotated := desc.Annotations[estargz.TOCJSONDigestAnnotation]
	switch {
	case err != nil && !annotated:
		return nil, fmt.Errorf("not an eStargz layer: %w: %w", err, errdefs.ErrFailedPrecondition)
	case err != nil:
		return nil, fmt.Errorf("opening the eStargz TOC: %w: %w", err, errdefs.ErrDataLoss)
	}
	// Without the annotation (a docker archive has no layer annotations) the
	// TOC can only be checked against itself; chunks and diff_id still are.
	tocDigest := r.TOCDigest()
	if annotated {
		if tocDigest, err = digest.Parse(ann); err != nil {
			return nil, fmt.Errorf("invalid %s annotation: %w: %w", estargz.TOCJSONDigestAnnotation, err, errdefs.ErrInvalidArgument)
		}
	}
	v, err := r.VerifyTOC(tocDigest)
	if err != nil {
		return nil, &entryError{entry: estargz.TOCTarName, err: fmt.Errorf("%w: %w", err, errdefs.ErrDataLoss)}
	}
	res := &LayerResult{Source: desc.Digest, Digest: desc.Digest, DiffID: diffID, MediaType: desc.MediaType, Size: desc.Size, TOCDigest: tocDigest.String()}
	root, _ := r.Lookup("")
	if res.Prioritized, err = verifyTree(ctx, r, v, "", root, landmarkOffset(r), map[int64]bool{}); err != nil {
		return nil, err
	}
	if res.Ranged, err = verifyRanges(r, desc.Annotations); err != nil {
		return nil, err
	}
	if err := verifyDiffID(ctx, sr, diffID, desc.Annotations[estargz.StoreUncompressedSizeAnnotation]); err != nil {
		return nil, err
	}
	return res, nil
}

// verifyRanges checks the layer's prefetch-ranges annotation, if any, and
// returns how many files it names: containerd must accept it as a label
// (or the image does not unpack), and each line must name a regular file
// of this layer with ranges within the file (or the ranges prefetch
// nothing, and the file should have been prioritized whole).
func verifyRanges(r *estargz.Reader, annotations map[string]string) (int, error) {
	v, ok := annotations[prefetchlist.LayerAnnotation]
	if !ok {
		return 0, nil
	}
	if n := len(prefetchlist.LayerAnnotation) + len(v); n > prefetchlist.MaxLabelSize {
		return 0, fmt.Errorf("annotation %s: %d bytes with its name, more than containerd accepts in a label (%d): %w",
			prefetchlist.LayerAnnotation, n, prefetchlist.MaxLabelSize, errdefs.ErrInvalidArgument)
	}
	list, err := prefetchlist.Read(strings.NewReader(v))
	if err == nil && len(list.Rejected) > 0 {
		err = fmt.Errorf("line %d: %s", list.Rejected[0].Line, list.Rejected[0].Reason)
	}
	if err != nil {
		return 0, fmt.Errorf("annotation %s: %v: %w", prefetchlist.LayerAnnotation, err, errdefs.ErrInvalidArgument)
	}
	for _, p := range list.Paths {
		e, ok := r.Lookup(strings.TrimPrefix(p, "/"))
		rs := list.Ranges[p]
		switch {
		case !ok || e.Type != "reg":
			return 0, &entryError{entry: p, err: fmt.Errorf("annotation %s names no regular file of the layer: %w",
				prefetchlist.LayerAnnotation, errdefs.ErrInvalidArgument)}
		case len(rs) == 0 || rs[len(rs)-1].End > e.Size:
			return 0, &entryError{entry: p, err: fmt.Errorf("annotation %s gives no ranges within the file's %d bytes: %w",
				prefetchlist.LayerAnnotation, e.Size, errdefs.ErrInvalidArgument)}
		}
	}
	return len(list.Paths), nil
}

// fetchBlob copies a layer blob to a temporary file (estargz reads it at
// random offsets), checking its digest and size on the way.
func fetchBlob(ctx context.Context, l v1.Layer, desc v1.Descriptor, dir string) (*os.File, error) {
	rc, err := l.Compressed()
	if err != nil {
		return nil, fmt.Errorf("fetching: %w", err)
	}
	defer rc.Close()
	f, err := os.CreateTemp(dir, "lazyconv-verify-*")
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), &progressReader{r: rc, ctx: ctx, report: func(int64) {}})
	got := v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", h.Sum(nil))}
	switch {
	case err != nil:
		err = fmt.Errorf("fetching: %w", err)
	case n != desc.Size || got != desc.Digest:
		err = fmt.Errorf("blob is %d bytes with digest %s, want %d bytes: %w", n, got, desc.Size, errdefs.ErrDataLoss)
	}
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	return f, nil
}

// landmarkOffset returns where the prefetch landmark is, or -1.
func landmarkOffset(r *estargz.Reader) int64 {
	if e, ok := r.Lookup(estargz.PrefetchLandmark); ok {
		return e.Offset
	}
	return -1
}

// verifyTree checks every chunk of every regular file under e and counts the
// files placed before the landmark. A hard link shares its target's entry;
// seen holds the offsets of the files already counted.
func verifyTree(ctx context.Context, r *estargz.Reader, v estargz.TOCEntryVerifier, name string, e *estargz.TOCEntry, landmark int64, seen map[int64]bool) (int, error) {
	prioritized := 0
	var err error
	e.ForeachChild(func(base string, child *estargz.TOCEntry) bool {
		if err = ctx.Err(); err != nil {
			return false
		}
		p := path.Join(name, base)
		switch child.Type {
		case "dir":
			var n int
			n, err = verifyTree(ctx, r, v, p, child, landmark, seen)
			prioritized += n
		case "reg":
			if child.Size == 0 || seen[child.Offset] {
				return true // nothing to check, or checked already
			}
			if child.Offset < landmark {
				prioritized++
			}
			seen[child.Offset] = true
			// A hard link's entry is its target's: check the data under
			// the name the TOC records it by.
			if err = verifyFile(r, v, strings.TrimPrefix(child.Name, "./"), child); err != nil {
				err = &entryError{entry: p, err: err}
			}
		}
		return err == nil
	})
	return prioritized, err
}

func verifyFile(r *estargz.Reader, v estargz.TOCEntryVerifier, name string, e *estargz.TOCEntry) error {
	if e.Size == 0 {
		return nil
	}
	fr, err := r.OpenFile(name)
	if err != nil {
		return fmt.Errorf("opening: %w: %w", err, errdefs.ErrDataLoss)
	}
	for off := int64(0); off < e.Size; {
		ce, ok := r.ChunkEntryForOffset(name, off)
		if !ok {
			return fmt.Errorf("no chunk at offset %d: %w", off, errdefs.ErrDataLoss)
		}
		size := ce.ChunkSize
		if size == 0 {
			size = e.Size - ce.ChunkOffset
		}
		dv, err := v.Verifier(ce)
		if err != nil {
			return fmt.Errorf("chunk at offset %d: %w: %w", off, err, errdefs.ErrDataLoss)
		}
		if _, err := io.Copy(dv, io.NewSectionReader(fr, ce.ChunkOffset, size)); err != nil {
			return fmt.Errorf("reading the chunk at offset %d: %w: %w", off, err, errdefs.ErrDataLoss)
		}
		if !dv.Verified() {
			return fmt.Errorf("chunk at offset %d does not match its digest: %w", off, errdefs.ErrDataLoss)
		}
		off = ce.ChunkOffset + size
	}
	return nil
}

// verifyDiffID checks the uncompressed blob against the config's diff_id
// and the uncompressed-size annotation, if any.
func verifyDiffID(ctx context.Context, sr *io.SectionReader, diffID v1.Hash, sizeAnnotation string) error {
	zr, err := decompress(&progressReader{r: io.NewSectionReader(sr, 0, sr.Size()), ctx: ctx, report: func(int64) {}})
	if err != nil {
		return fmt.Errorf("decompressing: %w: %w", err, errdefs.ErrDataLoss)
	}
	defer zr.Close()
	h := sha256.New()
	n, err := io.Copy(h, zr)
	if err != nil {
		return fmt.Errorf("decompressing: %w: %w", err, errdefs.ErrDataLoss)
	}
	if got := (v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", h.Sum(nil))}); got != diffID {
		return fmt.Errorf("uncompressed content %s does not match the config's diff_id %s: %w", got, diffID, errdefs.ErrDataLoss)
	}
	if sizeAnnotation != "" && sizeAnnotation != strconv.FormatInt(n, 10) {
		return fmt.Errorf("uncompressed size %d does not match the annotation %s: %w", n, sizeAnnotation, errdefs.ErrDataLoss)
	}
	return nil
}
