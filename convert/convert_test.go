package convert

import (
	"archive/tar"
	"context"
	"io"
	"os"
	"path"
	"reflect"
	"strings"
	"testing"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/containerd/stargz-snapshotter/estargz/zstdchunked"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// richFiles has every kind of entry a layer can hold.
func richFiles() []file {
	long := strings.Repeat("long-directory-name/", 8) + "file-with-a-long-name.txt"
	gnu := reg(strings.Repeat("g", 120), "gnu long name")
	gnu.hdr.Format = tar.FormatGNU
	x := reg("etc/xattr", "has xattrs")
	x.hdr.PAXRecords = map[string]string{"SCHILY.xattr.user.lazysnap": "yes", "SCHILY.xattr.security.capability": "\x01\x00\x00\x02"}
	owned := reg("home/user/owned", "owned by user")
	owned.hdr.Uid, owned.hdr.Gid, owned.hdr.Uname, owned.hdr.Gname, owned.hdr.Mode = 1000, 1001, "user", "group", 0o4750
	files := []file{
		dir("etc", 0o755), dir("home", 0o755), dir("home/user", 0o700), dir("dev", 0o755), dir("usr", 0o755), dir("usr/bin", 0o755),
		dir(strings.TrimSuffix(long[:strings.LastIndex(long, "/")], "/"), 0o755),
		reg("etc/hostname", "lazysnap\n"),
		reg("etc/empty", ""),
		regBytes("usr/bin/big", randBytes(1, 300<<10)),
		regBytes("usr/bin/text", []byte(strings.Repeat("compressible text ", 20000))),
		hardlink("usr/bin/big-link", "usr/bin/big"),
		symlink("usr/bin/abs", "/usr/bin/big"),
		symlink("usr/bin/rel", "../bin/text"),
		x, owned,
		reg("etc/.wh.removed", ""),
		reg("home/.wh..wh..opq", ""),
		{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "dev/null", Mode: 0o666, Devmajor: 1, Devminor: 3, ModTime: epoch}},
		{hdr: tar.Header{Typeflag: tar.TypeBlock, Name: "dev/loop0", Mode: 0o660, Devmajor: 7, Devminor: 0, ModTime: epoch}},
		{hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "dev/fifo", Mode: 0o600, ModTime: epoch}},
		reg(long, "long PAX name"),
		gnu,
	}
	// The parents of the long name.
	var dirs []file
	for _, a := range ancestors(long) {
		dirs = append(dirs, dir(a, 0o755))
	}
	return append(dirs, files...)
}

func TestRoundTrip(t *testing.T) {
	for _, format := range []Format{FormatEStargz, FormatZstdChunked} {
		t.Run(strings.ReplaceAll(string(format), ":", "-"), func(t *testing.T) {
			src := gzLayer(t, richFiles()...)
			img := imageOf(t, src)
			out := convertImage(t, img, WithFormat(format), WithChunkSize(64<<10))
			layers, err := out.Layers()
			if err != nil {
				t.Fatal(err)
			}
			want, _ := layerEntries(t, src)
			got, _ := layerEntries(t, layers[0])
			delete(got, estargz.NoPrefetchLandmark)
			if !reflect.DeepEqual(sortedKeys(got), sortedKeys(want)) {
				t.Fatalf("entries differ:\n got %v\nwant %v", sortedKeys(got), sortedKeys(want))
			}
			for name, w := range want {
				if g := got[name]; !reflect.DeepEqual(g, w) {
					t.Errorf("%s:\n got %v\nwant %v", name, g, w)
				}
			}
			checkTOC(t, layers[0], want)
			if _, err := Verify(context.Background(), out, t.TempDir()); err != nil {
				t.Fatalf("verify: %v", err)
			}
		})
	}
}

// checkTOC compares the metadata a snapshotter reads from the TOC with the
// source entries.
func checkTOC(t *testing.T, l v1.Layer, want map[string]entryInfo) {
	t.Helper()
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	f, err := os.CreateTemp(t.TempDir(), "blob")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n, err := io.Copy(f, rc)
	if err != nil {
		t.Fatal(err)
	}
	r, err := estargz.Open(io.NewSectionReader(f, 0, n), estargz.WithDecompressors(new(zstdchunked.Decompressor)))
	if err != nil {
		t.Fatalf("opening the TOC: %v", err)
	}
	for name, w := range want {
		e, ok := r.Lookup(name)
		if !ok {
			t.Errorf("%s: not in the TOC", name)
			continue
		}
		if w.Type == tar.TypeLink {
			continue // the TOC resolves hard links to their target's entry
		}
		xattrs := map[string]string{}
		for k, v := range e.Xattrs {
			xattrs["SCHILY.xattr."+k] = string(v)
		}
		wx := w.Xattrs
		if wx == nil {
			wx = map[string]string{}
		}
		if e.Mode != w.Mode || e.UID != w.UID || e.GID != w.GID || e.LinkName != w.Linkname ||
			int64(e.DevMajor) != w.Devmajor || int64(e.DevMinor) != w.Devminor || !reflect.DeepEqual(xattrs, wx) ||
			(w.Type == tar.TypeReg && e.Size != w.Size) {
			t.Errorf("%s: TOC entry %+v does not match %v", name, e, w)
		}
	}
	_ = path.Base
}

func TestMediaTypesAndAnnotations(t *testing.T) {
	tb := tarBytes(t, reg("a", "a"))
	layers := []v1.Layer{
		&blobLayer{blob: gzipBytes(t, tb), diffID: sha(tb), mt: types.DockerLayer},
		&blobLayer{blob: zstdBytes(t, tb), diffID: sha(tb), mt: types.OCILayerZStd},
		&blobLayer{blob: tb, diffID: sha(tb), mt: types.OCIUncompressedLayer},
	}
	out := convertImage(t, imageOf(t, layers...))
	m, err := out.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := out.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range m.Layers {
		if d.MediaType != types.OCILayer {
			t.Errorf("layer %d: media type %s", i, d.MediaType)
		}
		if d.Annotations[estargz.TOCJSONDigestAnnotation] == "" || d.Annotations[estargz.StoreUncompressedSizeAnnotation] == "" {
			t.Errorf("layer %d: annotations %v", i, d.Annotations)
		}
		l, err := out.LayerByDigest(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		zr, err := decompress(rc)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(zr)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		if sha(b) != cfg.RootFS.DiffIDs[i] {
			t.Errorf("layer %d: diff_id %s, uncompressed %s", i, cfg.RootFS.DiffIDs[i], sha(b))
		}
	}
	if cfg.Config.Cmd[0] != "/bin/sh" || cfg.OS != "linux" {
		t.Errorf("config lost fields: %+v", cfg)
	}
}
