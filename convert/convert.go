// Package convert turns container images into lazily pullable ones: every
// layer becomes an eStargz (or zstd:chunked) layer whose table of contents
// lets a snapshotter fetch single files with HTTP Range requests, optionally
// with the files a workload reads first placed before the prefetch landmark.
//
// It works on go-containerregistry's v1.Image and v1.ImageIndex, so any of
// its sources and sinks (remote, layout, tarball) apply. Converted layers
// live in temporary files until the Converter is closed; a conversion either
// returns a complete image or an error, never a partial one, so a caller that
// writes only after success never leaves anything half-written behind.
package convert

import (
	"context"
	"fmt"
	"os"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Converter converts images. Its methods may be called concurrently. Images
// it returns read their layers from its temporary directory, so they must be
// written out before Close.
type Converter struct {
	opts options
	dir  string
}

// New returns a Converter with its own temporary directory.
func New(opts ...Option) (*Converter, error) {
	o := defaultOptions()
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	dir, err := os.MkdirTemp(o.workDir, "lazyconv-")
	if err != nil {
		return nil, fmt.Errorf("creating the work directory: %w", err)
	}
	return &Converter{opts: o, dir: dir}, nil
}

// Close removes every temporary file of the Converter.
func (c *Converter) Close() error { return os.RemoveAll(c.dir) }

// Index converts every image of idx (those of the WithPlatform platform
// only, if set) and returns an index of the converted images. Descriptors
// of manifests that are not images of a platform (such as build attestations,
// which would point at the old images) are dropped.
func (c *Converter) Index(ctx context.Context, idx v1.ImageIndex) (v1.ImageIndex, error) {
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("reading the index manifest: %w", err)
	}
	mt, err := idx.MediaType()
	if err != nil {
		return nil, err
	}
	out := mutate.IndexMediaType(empty.Index, mt)
	var adds []mutate.IndexAddendum
	for _, desc := range im.Manifests {
		add, err := c.indexEntry(ctx, idx, desc)
		if err != nil {
			return nil, err
		}
		if add != nil {
			adds = append(adds, *add)
		}
	}
	if len(adds) == 0 {
		return nil, fmt.Errorf("no image in the index for platform %s: %w", platformString(c.opts.platform), errdefs.ErrNotFound)
	}
	out = mutate.AppendManifests(out, adds...)
	if len(im.Annotations) > 0 {
		out = mutate.Annotations(out, im.Annotations).(v1.ImageIndex)
	}
	return out, nil
}

// indexEntry converts what one descriptor of an index names, or returns nil
// to leave it out.
func (c *Converter) indexEntry(ctx context.Context, idx v1.ImageIndex, desc v1.Descriptor) (*mutate.IndexAddendum, error) {
	switch {
	case desc.MediaType.IsIndex():
		child, err := idx.ImageIndex(desc.Digest)
		if err != nil {
			return nil, fmt.Errorf("reading index %s: %w", desc.Digest, err)
		}
		conv, err := c.Index(ctx, child)
		if errdefs.IsNotFound(err) && c.opts.platform != nil {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		return &mutate.IndexAddendum{Add: conv, Descriptor: v1.Descriptor{MediaType: desc.MediaType, Annotations: desc.Annotations, Platform: desc.Platform}}, nil
	case !desc.MediaType.IsImage() || desc.Platform == nil || desc.Platform.OS == "unknown":
		c.opts.warn("dropping an index entry that is not a platform image", "digest", desc.Digest, "mediaType", desc.MediaType)
		return nil, nil
	case c.opts.platform != nil && !desc.Platform.Satisfies(*c.opts.platform):
		return nil, nil
	}
	img, err := idx.Image(desc.Digest)
	if err != nil {
		return nil, fmt.Errorf("reading image %s: %w", desc.Digest, err)
	}
	conv, err := c.convert(ctx, img)
	if err != nil {
		return nil, fmt.Errorf("image %s (%s): %w", desc.Digest, platformString(desc.Platform), err)
	}
	return &mutate.IndexAddendum{Add: conv, Descriptor: v1.Descriptor{Annotations: desc.Annotations, Platform: desc.Platform}}, nil
}

// Image converts one image. With WithPlatform set, an image of another
// platform is an errdefs.ErrNotFound error.
func (c *Converter) Image(ctx context.Context, img v1.Image) (v1.Image, error) {
	if p := c.opts.platform; p != nil {
		cfg, err := img.ConfigFile()
		if err != nil {
			return nil, fmt.Errorf("reading the image config: %w", err)
		}
		if own := cfg.Platform(); own == nil || !own.Satisfies(*p) {
			return nil, fmt.Errorf("the image is for %s, not %s: %w", platformString(own), platformString(p), errdefs.ErrNotFound)
		}
	}
	return c.convert(ctx, img)
}

func platformString(p *v1.Platform) string {
	if p == nil {
		return "unknown"
	}
	return p.String()
}

// layerMediaType returns the media type of a new layer in a manifest of
// type manifestType.
func (c *Converter) layerMediaType(manifestType types.MediaType) types.MediaType {
	switch {
	case c.opts.format == FormatZstdChunked:
		return types.OCILayerZStd
	case manifestType == types.DockerManifestSchema2:
		return types.DockerLayer
	default:
		return types.OCILayer
	}
}
