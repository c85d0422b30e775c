package convert

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/containerd/stargz-snapshotter/estargz"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/lazysnap/lazysnap/prefetchlist"
)

// tampered returns a converted one-layer image whose blob was changed by
// edit, or whose annotations were.
func tampered(t *testing.T, edit func(blob []byte, toc *estargz.Reader), ann func(map[string]string)) (v1.Image, v1.Hash) {
	t.Helper()
	out := convertImage(t, imageOf(t, gzLayer(t, dir("usr", 0o755), regBytes("usr/big", randBytes(4, 200<<10)), reg("small", "s"))), WithChunkSize(64<<10))
	m, _ := out.Manifest()
	cfg, _ := out.ConfigFile()
	l, _ := out.LayerByDigest(m.Layers[0].Digest)
	rc, _ := l.Compressed()
	blob, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	r, err := estargz.Open(io.NewSectionReader(bytes.NewReader(blob), 0, int64(len(blob))))
	if err != nil {
		t.Fatal(err)
	}
	a := map[string]string{}
	for k, v := range m.Layers[0].Annotations {
		a[k] = v
	}
	if edit != nil {
		edit(blob, r)
	}
	if ann != nil {
		ann(a)
	}
	bl := &blobLayer{blob: blob, diffID: cfg.RootFS.DiffIDs[0], mt: types.OCILayer}
	d, _ := bl.Digest()
	return appendLayer(t, imageOf(t), bl, a), d
}

func TestVerifyFindsDamage(t *testing.T) {
	cases := []struct {
		name  string
		edit  func([]byte, *estargz.Reader)
		ann   func(map[string]string)
		entry string
	}{
		{"chunk", func(b []byte, r *estargz.Reader) {
			ce, _ := r.ChunkEntryForOffset("usr/big", 70<<10)
			b[ce.Offset+40] ^= 0xff
		}, nil, "usr/big"},
		{"toc digest", nil, func(a map[string]string) {
			a[estargz.TOCJSONDigestAnnotation] = "sha256:" + string(bytes.Repeat([]byte("0"), 64))
		}, estargz.TOCTarName},
		{"uncompressed size", nil, func(a map[string]string) { a[estargz.StoreUncompressedSizeAnnotation] = "1" }, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			img, layer := tampered(t, tc.edit, tc.ann)
			_, err := Verify(context.Background(), img, t.TempDir())
			var le *LayerError
			if !errors.As(err, &le) || le.Layer != layer || le.Entry != tc.entry || !errdefs.IsDataLoss(err) {
				t.Fatalf("got %v, want a data loss error on layer %s entry %q", err, layer, tc.entry)
			}
		})
	}
	// Untampered, the same image verifies.
	img, _ := tampered(t, nil, nil)
	if _, err := Verify(context.Background(), img, t.TempDir()); err != nil {
		t.Fatal(err)
	}
}

// TestVerifyChecksRangesAnnotation: a prefetch-ranges annotation must be a
// label containerd accepts, naming regular files of the layer with ranges
// within them; Verify reports how many files it names.
func TestVerifyChecksRangesAnnotation(t *testing.T) {
	set := func(v string) func(map[string]string) {
		return func(a map[string]string) { a[prefetchlist.LayerAnnotation] = v }
	}
	img, _ := tampered(t, nil, set("/usr/big\n#@ranges 0-65536,131072-204800\n"))
	res, err := Verify(context.Background(), img, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Ranged != 1 {
		t.Errorf("Ranged = %d, want 1", res[0].Ranged)
	}
	cases := []struct {
		name, value, entry string
	}{
		{"not in the layer", "/usr/none\n#@ranges 0-10\n", "/usr/none"},
		{"a directory", "/usr\n#@ranges 0-10\n", "/usr"},
		{"past the end", "/usr/big\n#@ranges 0-300000\n", "/usr/big"},
		{"no ranges", "/usr/big\n", "/usr/big"},
		{"a rejected line", "/usr/../big\n#@ranges 0-10\n", ""},
		{"larger than a label", "/usr/big\n#@ranges " + strings.Repeat("0-1,", 1200) + "2-3\n", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			img, layer := tampered(t, nil, set(tc.value))
			_, err := Verify(context.Background(), img, t.TempDir())
			var le *LayerError
			if !errors.As(err, &le) || le.Layer != layer || le.Entry != tc.entry || !errdefs.IsInvalidArgument(err) {
				t.Fatalf("got %v, want an invalid argument error on layer %s entry %q", err, layer, tc.entry)
			}
		})
	}
}
