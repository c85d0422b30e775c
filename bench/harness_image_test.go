package bench

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/lazysnap/lazysnap/internal/testenv"
)

// tinyLayers is busybox plus 8 MiB of random files of which the workloads
// read one 64 KiB file: a lazy pull must fetch much less than a full one.
func tinyLayers() []testenv.LayerSpec {
	return []testenv.LayerSpec{
		testenv.BusyboxLayer(),
		{Files: testenv.GeneratedFiles("/data/big", 8, 1<<20, testenv.Random)},
		{Files: testenv.GeneratedFiles("/data/small", 1, 64<<10, testenv.Random)},
		{Files: testenv.GeneratedFiles("/data/ready", 1, 100, testenv.Compressible)},
	}
}

// buildTiny pushes the tiny image with a last layer holding two more
// copies of busybox, /p1/busybox and /p2/busybox: the probe workload
// sleeps in one and probes with the other, so that no executable is opened
// twice at once. The kernel refuses (EIO) a FUSE passthrough open of an
// inode that has a non-passthrough handle open, which lazysnap builds have
// hit when a file completed in the cache between two opens (running
// /bin/cat from /bin/sh); this test is about the harness, so it keeps clear
// of that.
func buildTiny(tb testing.TB, reg *testenv.Registry) *testenv.Image {
	tb.Helper()
	base := testenv.BuildImage(tb, reg, "bench-tiny:base", tinyLayers()...)
	img, err := withBusyboxCopies(base.Ref, reg.Ref("bench-tiny:1"))
	if err != nil {
		tb.Fatalf("adding busybox copies: %v", err)
	}
	return img
}

func withBusyboxCopies(src, dst string) (*testenv.Image, error) {
	srcRef, err := name.ParseReference(src, name.Insecure)
	if err != nil {
		return nil, err
	}
	base, err := remote.Image(srcRef)
	if err != nil {
		return nil, fmt.Errorf("fetching %s: %w", src, err)
	}
	layerTar, err := busyboxCopiesTar("p1", "p2")
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(base, layer)
	if err != nil {
		return nil, err
	}
	return pushImage(img, dst)
}

func busyboxCopiesTar(dirs ...string) ([]byte, error) {
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		return nil, fmt.Errorf("reading busybox: %w", err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, d := range dirs {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755}); err != nil {
			return nil, err
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: d + "/busybox", Mode: 0o755, Size: int64(len(bb))}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(bb); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
