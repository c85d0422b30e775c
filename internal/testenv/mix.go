package testenv

import (
	"fmt"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// MixLayers pushes dst, an image whose layer i is layer i of the image
// sources[i] (same layer count, same content, different formats: e.g. an
// eStargz conversion and its gzip original), with the run config of
// sources[0]. Layer annotations (the TOC digest) are kept.
func MixLayers(t testing.TB, dst string, sources ...string) {
	t.Helper()
	if err := mixLayers(dst, sources); err != nil {
		t.Fatalf("mixing layers into %s: %v", dst, err)
	}
}

func mixLayers(dst string, sources []string) error {
	imgs := make([]v1.Image, len(sources))
	for i, src := range sources {
		ref, err := name.ParseReference(src, name.Insecure)
		if err != nil {
			return fmt.Errorf("parsing %s: %w", src, err)
		}
		if imgs[i], err = remote.Image(ref); err != nil {
			return fmt.Errorf("fetching %s: %w", src, err)
		}
	}
	var adds []mutate.Addendum
	for i, img := range imgs {
		add, err := layerAddendum(img, i)
		if err != nil {
			return fmt.Errorf("layer %d of %s: %w", i, sources[i], err)
		}
		adds = append(adds, add)
	}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	mixed, err := mutate.Append(base, adds...)
	if err != nil {
		return fmt.Errorf("appending layers: %w", err)
	}
	cf, err := imgs[0].ConfigFile()
	if err != nil {
		return fmt.Errorf("reading config: %w", err)
	}
	if mixed, err = withRunConfig(mixed, cf.Config.Cmd); err != nil {
		return err
	}
	return push(mixed, &Image{Ref: dst})
}

// layerAddendum takes layer i of img with its manifest annotations.
func layerAddendum(img v1.Image, i int) (mutate.Addendum, error) {
	layers, err := img.Layers()
	if err != nil {
		return mutate.Addendum{}, err
	}
	m, err := img.Manifest()
	if err != nil {
		return mutate.Addendum{}, err
	}
	if i >= len(layers) || i >= len(m.Layers) {
		return mutate.Addendum{}, fmt.Errorf("image has %d layers", len(layers))
	}
	return mutate.Addendum{Layer: layers[i], Annotations: m.Layers[i].Annotations, MediaType: m.Layers[i].MediaType}, nil
}

// ForgeDiffIDs pushes dst: the image src (its layers, annotations and run
// config) with the diff_ids of the image liar claims instead of its own,
// as an attacker would to have src's layers reused under liar's chain IDs.
func ForgeDiffIDs(t testing.TB, dst, src, liar string) {
	t.Helper()
	if err := forgeDiffIDs(dst, src, liar); err != nil {
		t.Fatalf("forging %s: %v", dst, err)
	}
}

func forgeDiffIDs(dst, src, liar string) error {
	var cfgs [2]*v1.ConfigFile
	var srcImg v1.Image
	for i, r := range []string{src, liar} {
		ref, err := name.ParseReference(r, name.Insecure)
		if err != nil {
			return err
		}
		img, err := remote.Image(ref)
		if err != nil {
			return fmt.Errorf("fetching %s: %w", r, err)
		}
		if cfgs[i], err = img.ConfigFile(); err != nil {
			return err
		}
		if i == 0 {
			srcImg = img
		}
	}
	cfg := cfgs[0].DeepCopy()
	cfg.RootFS.DiffIDs = cfgs[1].RootFS.DiffIDs
	forged, err := mutate.ConfigFile(srcImg, cfg)
	if err != nil {
		return err
	}
	return push(forged, &Image{Ref: dst})
}
