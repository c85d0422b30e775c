package bench

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/lazysnap/lazysnap/internal/testenv"
)

// UserWorkload is an image the user names, a registry reference (plain
// HTTP allowed) or "oci:DIR" (an OCI image layout), with its command and
// ready signal. The image is copied into the benchmark's registry.
func UserWorkload(workloadName, src string, cmd []string, ready ReadySignal) Workload {
	return Workload{
		Name:  workloadName,
		Cmd:   cmd,
		Ready: ready,
		Build: func(tb testing.TB, reg *testenv.Registry) *testenv.Image {
			tb.Helper()
			img, err := copyImage(src, reg.Ref("bench-"+workloadName+":source"))
			if err != nil {
				tb.Fatalf("copying %s: %v", src, err)
			}
			return img
		},
	}
}

// copyImage pushes this platform's image of src to dst.
func copyImage(src, dst string) (*testenv.Image, error) {
	img, err := readImage(src)
	if err != nil {
		return nil, err
	}
	return pushImage(img, dst)
}

// pushImage pushes img to dst and describes it as testenv does.
func pushImage(img v1.Image, dst string) (*testenv.Image, error) {
	ref, err := name.ParseReference(dst, name.Insecure)
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", dst, err)
	}
	if err := remote.Write(ref, img); err != nil {
		return nil, fmt.Errorf("pushing %s: %w", dst, err)
	}
	out := &testenv.Image{Ref: dst}
	d, err := img.Digest()
	if err != nil {
		return nil, fmt.Errorf("digest of %s: %w", dst, err)
	}
	out.Digest = d.String()
	layers, err := img.Layers()
	if err != nil {
		return nil, fmt.Errorf("layers of %s: %w", dst, err)
	}
	for _, l := range layers {
		size, err := l.Size()
		if err != nil {
			return nil, fmt.Errorf("layer size: %w", err)
		}
		out.CompressedSize += size
	}
	return out, nil
}

func thisPlatform() v1.Platform { return v1.Platform{OS: "linux", Architecture: runtime.GOARCH} }

func readImage(src string) (v1.Image, error) {
	dir, isLayout := strings.CutPrefix(src, "oci:")
	if !isLayout {
		ref, err := name.ParseReference(src, name.Insecure)
		if err != nil {
			return nil, fmt.Errorf("parsing %s: %w", src, err)
		}
		img, err := remote.Image(ref, remote.WithPlatform(thisPlatform()))
		if err != nil {
			return nil, fmt.Errorf("fetching %s: %w", src, err)
		}
		return img, nil
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("reading layout %s: %w", dir, err)
	}
	return imageOf(idx)
}

// imageOf returns this platform's image of idx (the first one that matches,
// or the only image), descending into nested indexes.
func imageOf(idx v1.ImageIndex) (v1.Image, error) {
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("reading index: %w", err)
	}
	want := thisPlatform()
	for _, d := range m.Manifests {
		switch {
		case d.MediaType.IsIndex():
			child, err := idx.ImageIndex(d.Digest)
			if err != nil {
				return nil, fmt.Errorf("reading index %s: %w", d.Digest, err)
			}
			return imageOf(child)
		case d.MediaType.IsImage() && (d.Platform == nil || d.Platform.Satisfies(want) || len(m.Manifests) == 1):
			return idx.Image(d.Digest)
		}
	}
	return nil, fmt.Errorf("no %s/%s image in the layout", want.OS, want.Architecture)
}
