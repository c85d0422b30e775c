package testenv

import (
	"archive/tar"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"runtime"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Image is a generated image pushed to a test registry.
type Image struct {
	// Ref is the full reference (HOST:PORT/repo:tag).
	Ref string
	// Digest is the manifest digest.
	Digest string
	// Files maps each regular file of the root filesystem to its sha256.
	Files map[string]string
	// Sizes maps each regular file of the root filesystem to its size.
	Sizes map[string]int64
	// CompressedSize is the sum of the layer blob sizes.
	CompressedSize int64
	// FileBytes is the sum of the sizes of the generated files.
	FileBytes int64
}

// BuildImage generates an OCI image of layers (lowest first), pushes it to
// reg as repoTag ("name:tag") and returns what a container should see.
func BuildImage(t testing.TB, reg *Registry, repoTag string, layers ...LayerSpec) *Image {
	t.Helper()
	img, err := buildImage(reg.Ref(repoTag), []string{"/bin/sh"}, layers)
	if err != nil {
		t.Fatalf("building image %s: %v", repoTag, err)
	}
	return img
}

func buildImage(ref string, cmd []string, layers []LayerSpec) (*Image, error) {
	out := &Image{Ref: ref, Files: map[string]string{}, Sizes: map[string]int64{}}
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	var adds []mutate.Addendum
	for i, spec := range layers {
		bl, err := layerFor(spec)
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		layer, err := tarball.LayerFromOpener(openFile(bl.Path), tarball.WithMediaType(types.OCILayer))
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		size, err := layer.Size()
		if err != nil {
			return nil, fmt.Errorf("layer %d size: %w", i, err)
		}
		out.CompressedSize += size
		for p, sum := range bl.Files {
			out.Files[p] = sum
		}
		if err := addTarSizes(bl.Path, out.Sizes); err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		for _, f := range spec.Files {
			out.FileBytes += f.Size
		}
		adds = append(adds, mutate.Addendum{Layer: layer, History: v1.History{CreatedBy: fmt.Sprintf("testenv layer %d", i)}})
	}
	img, err := mutate.Append(base, adds...)
	if err != nil {
		return nil, fmt.Errorf("appending layers: %w", err)
	}
	if img, err = withRunConfig(img, cmd); err != nil {
		return nil, err
	}
	return out, push(img, out)
}

func withRunConfig(img v1.Image, cmd []string) (v1.Image, error) {
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Config.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	cf.Config.Cmd = cmd
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("setting config: %w", err)
	}
	return img, nil
}

func push(img v1.Image, out *Image) error {
	ref, err := name.ParseReference(out.Ref, name.Insecure)
	if err != nil {
		return fmt.Errorf("parsing %s: %w", out.Ref, err)
	}
	if err := remote.Write(ref, img); err != nil {
		return fmt.Errorf("pushing %s: %w", out.Ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		return fmt.Errorf("digest of %s: %w", out.Ref, err)
	}
	out.Digest = d.String()
	return nil
}

func openFile(path string) tarball.Opener {
	return func() (io.ReadCloser, error) { return os.Open(path) }
}

// RefVia returns Ref with its registry host replaced by host, to pull the
// same image through a proxy in front of the registry.
func (img *Image) RefVia(host string) string {
	return RefVia(img.Ref, host)
}

// RefVia replaces the registry host of ref ("HOST:PORT/repo:tag") by host.
func RefVia(ref, host string) string {
	_, rest, _ := strings.Cut(ref, "/")
	return host + "/" + rest
}

// Listing returns what ListingCommand(dir) prints for this image: one
// "SHA256  PATH" line per regular file under dir, sorted by path.
func (img *Image) Listing(dir string) string {
	var paths []string
	for p := range img.Files {
		if strings.HasPrefix(p, dir+"/") {
			paths = append(paths, p)
		}
	}
	sort.Strings(paths)
	var b strings.Builder
	for _, p := range paths {
		fmt.Fprintf(&b, "%s  %s\n", img.Files[p], p)
	}
	return b.String()
}

// ListingCommand is a container command printing the sha256 of every
// regular file under dir, sorted by path (busybox sort is bytewise, as Go's).
func ListingCommand(dir string) []string {
	return []string{"/bin/sh", "-c", "find " + dir + " -xdev -type f | sort | xargs sha256sum"}
}

// addTarSizes records the size of each regular file of the gzip layer tar
// at path, by its absolute path.
func addTarSizes(path string, sizes map[string]int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return err
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading %s: %w", path, err)
		}
		if h.Typeflag == tar.TypeReg {
			sizes["/"+strings.TrimPrefix(h.Name, "/")] = h.Size
		}
	}
}
