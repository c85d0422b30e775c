package convert

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"reflect"
	"testing"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// FuzzConvertLayer feeds arbitrary bytes to the converter as a layer. Either
// the checks reject them with an error, or the conversion succeeds and the
// converted layer holds exactly the entries of the input.
func FuzzConvertLayer(f *testing.F) {
	f.Add(tarBytes(f, dir("etc", 0o755), reg("etc/a", "hello"), hardlink("etc/b", "etc/a"), symlink("c", "/etc/a")))
	f.Add(tarBytes(f, reg("a", "x"), reg("a", "y"), file{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "null", Devmajor: 1, Devminor: 3}}))
	f.Add(tarBytes(f, reg("../x", "x")))
	f.Add(gzipBytes(f, tarBytes(f, reg("gz", "gzip"))))
	f.Add([]byte("not a tar"))
	f.Fuzz(func(t *testing.T, data []byte) {
		zr, err := decompress(bytes.NewReader(data))
		if err != nil {
			return
		}
		sl, err := stage(zr, io.Discard, nil)
		if err != nil {
			return
		}
		img := imageOf(t, &blobLayer{blob: data, diffID: sl.diffID, mt: types.OCIUncompressedLayer})
		out, err := newConverter(t, WithBuildParts(2)).Image(context.Background(), img)
		if err != nil {
			t.Fatalf("a layer that passed the checks did not convert: %v", err)
		}
		layers, err := out.Layers()
		if err != nil {
			t.Fatal(err)
		}
		want, _ := readEntries(t, bytes.NewReader(data))
		got, _ := layerEntries(t, layers[0])
		delete(got, estargz.NoPrefetchLandmark)
		delete(want, estargz.NoPrefetchLandmark)
		delete(want, estargz.TOCTarName)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("entries differ:\n got %v\nwant %v", got, want)
		}
	})
}
