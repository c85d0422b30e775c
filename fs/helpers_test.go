package fs_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	ggcr "github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/opencontainers/go-digest"

	lfs "github.com/lazysnap/lazysnap/fs"
	"github.com/lazysnap/lazysnap/fs/remote"
)

// tentry is one entry of a generated layer tar.
type tentry struct {
	name   string
	typ    byte
	mode   int64
	uid    int
	gid    int
	size   int64
	seed   uint64 // regular file content: a seeded ChaCha8 stream of size bytes
	data   []byte // or these bytes, when set
	link   string
	major  int64
	minor  int64
	xattrs map[string]string
}

var testMtime = time.Unix(1700000000, 0).UTC()

func (e tentry) content() io.Reader {
	if e.data != nil {
		return bytes.NewReader(e.data)
	}
	var seed [32]byte
	seed[0], seed[1] = byte(e.seed), byte(e.seed>>8)
	return io.LimitReader(rand.NewChaCha8(seed), e.size)
}

func (e tentry) sha256() [32]byte {
	h := sha256.New()
	if _, err := io.Copy(h, e.content()); err != nil {
		panic(err)
	}
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}

func dir(name string, mode int64) tentry { return tentry{name: name, typ: tar.TypeDir, mode: mode} }
func reg(name string, size int64, seed uint64) tentry {
	return tentry{name: name, typ: tar.TypeReg, mode: 0o644, size: size, seed: seed}
}
func text(name, s string) tentry {
	return tentry{name: name, typ: tar.TypeReg, mode: 0o644, size: int64(len(s)), data: []byte(s)}
}

// writeTar writes es as a tar file in dir.
func writeTar(t testing.TB, es []tentry) string {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "layer-*.tar")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	for _, e := range es {
		h := &tar.Header{
			Name: e.name, Typeflag: e.typ, Mode: e.mode, Uid: e.uid, Gid: e.gid, ModTime: testMtime,
			Linkname: e.link, Devmajor: e.major, Devminor: e.minor, Format: tar.FormatPAX,
		}
		if e.typ == tar.TypeReg {
			h.Size = e.size
		}
		for k, v := range e.xattrs {
			if h.PAXRecords == nil {
				h.PAXRecords = map[string]string{}
			}
			h.PAXRecords["SCHILY.xattr."+k] = v
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.typ == tar.TypeReg {
			if _, err := io.Copy(tw, e.content()); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return f.Name()
}

// builtLayer is an eStargz blob on disk.
type builtLayer struct {
	path      string
	digest    digest.Digest
	size      int64
	tocDigest digest.Digest
	diffID    digest.Digest // of the uncompressed tar, as an image config lists it
	entries   []tentry
}

// buildLayer converts es to eStargz with the estargz package.
func buildLayer(t testing.TB, es []tentry, opts ...estargz.Option) *builtLayer {
	t.Helper()
	tarPath := writeTar(t, es)
	tf, err := os.Open(tarPath)
	if err != nil {
		t.Fatal(err)
	}
	defer tf.Close()
	st, _ := tf.Stat()
	opts = append([]estargz.Option{estargz.WithCompressionLevel(gzip.BestSpeed)}, opts...)
	blob, err := estargz.Build(io.NewSectionReader(tf, 0, st.Size()), opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer blob.Close()
	out, err := os.CreateTemp(t.TempDir(), "layer-*.esgz")
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	dg := digest.SHA256.Digester()
	n, err := io.Copy(io.MultiWriter(out, dg.Hash()), blob)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(tarPath)
	return &builtLayer{path: out.Name(), digest: dg.Digest(), size: n, tocDigest: blob.TOCDigest(),
		diffID: blob.DiffID(), entries: es}
}

// push pushes an image of the layers to the registry at host and returns
// its reference.
func push(t testing.TB, host, repoTag string, layers ...*builtLayer) string {
	t.Helper()
	ref := host + "/" + repoTag
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img := empty.Image
	for _, l := range layers {
		tl, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return os.Open(l.path) })
		if err != nil {
			t.Fatal(err)
		}
		img, err = mutate.Append(img, mutate.Addendum{
			Layer:       tl,
			Annotations: map[string]string{estargz.TOCJSONDigestAnnotation: l.tocDigest.String()},
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := ggcr.Write(r, img); err != nil {
		t.Fatalf("pushing %s: %v", ref, err)
	}
	return ref
}

// labels are the labels containerd would pass for layer l of ref.
func labels(ref string, l *builtLayer) map[string]string {
	return map[string]string{
		lfs.LabelImageRef:    ref,
		lfs.LabelLayerDigest: l.digest.String(),
		lfs.LabelTOCDigest:   l.tocDigest.String(),
	}
}

// testResolver reaches plain-HTTP test registries with quick retries.
func testResolver(opts ...remote.Option) *remote.Resolver {
	base := []remote.Option{
		remote.WithHostsDir(""),
		remote.WithBackoff(5*time.Millisecond, 50*time.Millisecond),
		remote.WithStallTimeout(2 * time.Second),
	}
	return remote.NewResolver(append(base, opts...)...)
}

// newFS returns an FS with a private cache, closed when the test ends.
func newFS(t testing.TB, opts ...lfs.Option) *lfs.FS {
	t.Helper()
	base := []lfs.Option{lfs.WithCacheDir(t.TempDir()), lfs.WithResolver(testResolver())}
	f, err := lfs.New(append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := f.Close(); err != nil {
			t.Errorf("closing the FS: %v", err)
		}
	})
	return f
}

// mount mounts layer l of ref with f at a fresh directory.
func mount(t testing.TB, f *lfs.FS, ref string, l *builtLayer) string {
	t.Helper()
	mp := t.TempDir()
	if err := f.Mount(context.Background(), mp, labels(ref, l)); err != nil {
		t.Fatalf("mounting %s of %s: %v", l.digest, ref, err)
	}
	return mp
}

const (
	lfsLabelRef   = lfs.LabelImageRef
	lfsLabelLayer = lfs.LabelLayerDigest
	lfsLabelTOC   = lfs.LabelTOCDigest
)
