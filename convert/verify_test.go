package convert

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/containerd/stargz-snapshotter/estargz"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
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
