package convert

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/zstd"
)

// file is one tar entry of a generated layer.
type file struct {
	hdr  tar.Header
	body []byte
}

var epoch = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

func dir(name string, mode int64) file {
	return file{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, ModTime: epoch}}
}

func reg(name, body string) file {
	return file{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(body)), ModTime: epoch}, body: []byte(body)}
}

func regBytes(name string, body []byte) file {
	return file{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(body)), ModTime: epoch}, body: body}
}

func symlink(name, target string) file {
	return file{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777, ModTime: epoch}}
}

func hardlink(name, target string) file {
	return file{hdr: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target, Mode: 0o644, ModTime: epoch}}
}

// tarBytes writes files as a tar.
func tarBytes(t testing.TB, files ...file) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := f.hdr
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("writing %s: %v", h.Name, err)
		}
		if _, err := tw.Write(f.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gzipBytes(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func zstdBytes(t testing.TB, b []byte) []byte {
	t.Helper()
	zw, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	return zw.EncodeAll(b, nil)
}

func sha(b []byte) v1.Hash {
	s := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(s[:])}
}

// blobLayer is a layer whose blob, media type and diff_id are given as is,
// so that tests can hand the converter broken layers.
type blobLayer struct {
	blob   []byte
	diffID v1.Hash
	mt     types.MediaType
}

func (l *blobLayer) Digest() (v1.Hash, error)            { return sha(l.blob), nil }
func (l *blobLayer) DiffID() (v1.Hash, error)            { return l.diffID, nil }
func (l *blobLayer) Size() (int64, error)                { return int64(len(l.blob)), nil }
func (l *blobLayer) MediaType() (types.MediaType, error) { return l.mt, nil }
func (l *blobLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.blob)), nil
}
func (l *blobLayer) Uncompressed() (io.ReadCloser, error) { return nil, errors.New("not implemented") }

// gzLayer is a gzip-compressed OCI layer of files.
func gzLayer(t testing.TB, files ...file) v1.Layer {
	t.Helper()
	tb := tarBytes(t, files...)
	return &blobLayer{blob: gzipBytes(t, tb), diffID: sha(tb), mt: types.OCILayer}
}

// imageOf makes an OCI image of layers.
func imageOf(t testing.TB, layers ...v1.Layer) v1.Image {
	t.Helper()
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err := mutate.ConfigFile(img, &v1.ConfigFile{
		Architecture: "amd64", OS: "linux",
		Config: v1.Config{Env: []string{"PATH=/usr/bin"}, Cmd: []string{"/bin/sh"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		if img, err = mutate.Append(img, mutate.Addendum{Layer: l}); err != nil {
			t.Fatal(err)
		}
	}
	return img
}

func newConverter(t testing.TB, opts ...Option) *Converter {
	t.Helper()
	c, err := New(append([]Option{WithWorkDir(t.TempDir())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func convertImage(t testing.TB, img v1.Image, opts ...Option) v1.Image {
	t.Helper()
	out, err := newConverter(t, opts...).Image(context.Background(), img)
	if err != nil {
		t.Fatalf("converting: %v", err)
	}
	return out
}

// entryInfo is everything a tar entry says, content as a digest.
type entryInfo struct {
	Type               byte
	Mode               int64
	UID, GID           int
	Uname, Gname       string
	ModTime            time.Time
	Linkname           string
	Size               int64
	Devmajor, Devminor int64
	Xattrs             map[string]string
	Content            string
}

func (e entryInfo) String() string { return fmt.Sprintf("%+v", struct{ entryInfo }{e}) }

// readEntries reads an uncompressed tar (or a gzip/zstd one) into its
// entries by clean name, and their order.
func readEntries(t testing.TB, r io.Reader) (map[string]entryInfo, []string) {
	t.Helper()
	zr, err := decompress(r)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	out := make(map[string]entryInfo)
	var order []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("reading tar: %v", err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimSuffix(strings.TrimPrefix(h.Name, "./"), "/")
		e := entryInfo{Type: h.Typeflag, Mode: h.Mode, UID: h.Uid, GID: h.Gid, Uname: h.Uname, Gname: h.Gname,
			ModTime: h.ModTime.UTC(), Linkname: h.Linkname, Size: h.Size, Devmajor: h.Devmajor, Devminor: h.Devminor,
			Content: sha(body).String()}
		for k, v := range h.PAXRecords {
			if strings.HasPrefix(k, "SCHILY.xattr.") {
				if e.Xattrs == nil {
					e.Xattrs = map[string]string{}
				}
				e.Xattrs[k] = v
			}
		}
		out[name] = e
		order = append(order, name)
	}
	return out, order
}

// layerEntries reads a layer's entries, without eStargz's own files.
func layerEntries(t testing.TB, l v1.Layer) (map[string]entryInfo, []string) {
	t.Helper()
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	m, order := readEntries(t, rc)
	var kept []string
	for _, n := range order {
		if n != estargz.TOCTarName {
			kept = append(kept, n)
		}
	}
	delete(m, estargz.TOCTarName)
	return m, kept
}

func sortedKeys[V any](m map[string]V) []string {
	k := make([]string, 0, len(m))
	for n := range maps.Keys(m) {
		k = append(k, n)
	}
	sort.Strings(k)
	return k
}

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

func appendLayer(t testing.TB, img v1.Image, l v1.Layer, ann map[string]string) v1.Image {
	t.Helper()
	out, err := mutate.Append(img, mutate.Addendum{Layer: l, Annotations: ann})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
