package convert

import (
	"archive/tar"
	"context"
	"errors"
	"os"
	"testing"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func TestDeterministic(t *testing.T) {
	img := imageOf(t, gzLayer(t, richFiles()...), gzLayer(t, reg("b", "b"), regBytes("big", randBytes(2, 1<<20))))
	prio := WithPrioritizedFiles([]string{"big", "etc/hostname"})
	d1, err := convertImage(t, img, prio, WithConcurrency(1)).Digest()
	if err != nil {
		t.Fatal(err)
	}
	d2, err := convertImage(t, img, prio, WithConcurrency(4)).Digest()
	if err != nil {
		t.Fatal(err)
	}
	if d1 != d2 {
		t.Fatalf("two conversions gave %s and %s", d1, d2)
	}
}

func TestPassThrough(t *testing.T) {
	img := imageOf(t, gzLayer(t, reg("a", "a")))
	once := convertImage(t, img)
	twice := convertImage(t, once)
	d1, _ := once.Digest()
	d2, _ := twice.Digest()
	if d1 != d2 {
		t.Fatalf("converting a converted image changed it: %s -> %s", d1, d2)
	}
	// A converted layer under a new one is kept byte for byte.
	l, err := once.Layers()
	if err != nil {
		t.Fatal(err)
	}
	m1, _ := once.Manifest()
	mixed := imageOfDescs(t, once, gzLayer(t, reg("b", "b")))
	out := convertImage(t, mixed)
	m2, err := out.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m2.Layers[0].Digest != m1.Layers[0].Digest || m2.Layers[0].Size != m1.Layers[0].Size {
		t.Fatalf("kept layer changed: %v -> %v", m1.Layers[0], m2.Layers[0])
	}
	_ = l
	if _, err := Verify(context.Background(), out, t.TempDir()); err != nil {
		t.Fatal(err)
	}
}

// imageOfDescs appends a layer to a converted image, keeping its layers'
// annotations (mutate.Append drops them unless given).
func imageOfDescs(t *testing.T, base v1.Image, add v1.Layer) v1.Image {
	t.Helper()
	m, err := base.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	layers, err := base.Layers()
	if err != nil {
		t.Fatal(err)
	}
	img := imageOf(t)
	for i, l := range layers {
		img = appendLayer(t, img, l, m.Layers[i].Annotations)
	}
	return appendLayer(t, img, add, nil)
}

func TestBadInput(t *testing.T) {
	good := tarBytes(t, dir("etc", 0o755), regBytes("etc/a", randBytes(3, 10000)))
	gz := gzipBytes(t, good)
	corrupt := append([]byte(nil), gz...)
	for i := 20; i < 60; i++ {
		corrupt[i] ^= 0xff
	}
	tarLayer := func(files ...file) v1.Layer { return gzLayer(t, files...) }
	cases := []struct {
		name     string
		layer    v1.Layer
		entry    string
		category func(error) bool
	}{
		{"corrupt gzip", &blobLayer{blob: corrupt, diffID: sha(good), mt: types.OCILayer}, "", errdefs.IsInvalidArgument},
		{"truncated gzip", &blobLayer{blob: gz[:len(gz)/2], diffID: sha(good), mt: types.OCILayer}, "etc/a", errdefs.IsInvalidArgument},
		{"truncated tar", &blobLayer{blob: good[:1200], diffID: sha(good), mt: types.OCIUncompressedLayer}, "etc/a", errdefs.IsInvalidArgument},
		{"dot-dot name", tarLayer(reg("etc/../../x", "x")), "etc/../../x", errdefs.IsInvalidArgument},
		{"absolute name", tarLayer(reg("/etc/x", "x")), "/etc/x", errdefs.IsInvalidArgument},
		{"absolute hard link", tarLayer(reg("a", "a"), hardlink("b", "/a")), "b", errdefs.IsInvalidArgument},
		{"escaping hard link", tarLayer(reg("a", "a"), hardlink("b", "../a")), "b", errdefs.IsInvalidArgument},
		{"dangling hard link", tarLayer(hardlink("b", "a")), "b", errdefs.IsInvalidArgument},
		{"escaping symlink", tarLayer(dir("etc", 0o755), symlink("etc/x", "../../etc/shadow")), "etc/x", errdefs.IsInvalidArgument},
		{"unknown media type", &blobLayer{blob: gz, diffID: sha(good), mt: "application/vnd.example.layer"}, "", errdefs.IsInvalidArgument},
		{"wrong diff_id", &blobLayer{blob: gz, diffID: sha([]byte("other")), mt: types.OCILayer}, "", errdefs.IsDataLoss},
		{"global header", tarLayer(file{hdr: tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "g", PAXRecords: map[string]string{"comment": "x"}}}), "g", errdefs.IsInvalidArgument},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			work := t.TempDir()
			c, err := New(WithWorkDir(work))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			img := imageOf(t, gzLayer(t, reg("ok", "ok")), tc.layer)
			_, err = c.Image(context.Background(), img)
			var le *LayerError
			if !errors.As(err, &le) {
				t.Fatalf("got %v, want a LayerError", err)
			}
			want, _ := tc.layer.Digest()
			if le.Layer != want || le.Entry != tc.entry || !tc.category(err) {
				t.Fatalf("got layer %s entry %q (%v), want layer %s entry %q", le.Layer, le.Entry, err, want, tc.entry)
			}
			left, err := os.ReadDir(c.dir)
			if err != nil || len(left) != 0 {
				t.Fatalf("temporary files left behind: %v %v", left, err)
			}
		})
	}
}

func TestMissingPlatform(t *testing.T) {
	c := newConverter(t, WithPlatform(&v1.Platform{OS: "linux", Architecture: "arm64"}))
	_, err := c.Image(context.Background(), imageOf(t, gzLayer(t, reg("a", "a"))))
	if !errdefs.IsNotFound(err) {
		t.Fatalf("got %v, want not found", err)
	}
}
