package node

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"log/slog"
	"slices"
	"sync"
	"syscall"
	"testing"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/opencontainers/go-digest"

	"github.com/lazysnap/lazysnap/cache"
	"github.com/lazysnap/lazysnap/fs/layer"
	"github.com/lazysnap/lazysnap/fs/remote"
)

// These tests drive the nodes through go-fuse's bridge (the
// fuse.RawFileSystem the kernel's requests reach) without mounting: no
// root and no /dev/fuse needed. The layer, its index and cache are real.

// badBlob is an in-memory blob that can corrupt its responses, to inject
// the registry faults a read must turn into EIO.
type badBlob struct {
	data    []byte
	mu      sync.Mutex
	corrupt bool
}

func (b *badBlob) Digest() digest.Digest { return digest.FromBytes(b.data) }
func (b *badBlob) Size() int64           { return int64(len(b.data)) }
func (b *badBlob) Stats() remote.Stats   { return remote.Stats{} }
func (b *badBlob) TakeTail() []byte      { return nil }
func (b *badBlob) Fetch(_ context.Context, off, n int64) (io.ReadCloser, error) {
	body := bytes.Clone(b.data[off : off+n])
	b.mu.Lock()
	if b.corrupt {
		for i := range body {
			body[i] ^= 0xff
		}
	}
	b.mu.Unlock()
	return io.NopCloser(bytes.NewReader(body)), nil
}

const appConf = "listen = 8080\n"

func testTar(t *testing.T) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range []*tar.Header{
		{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "etc/app.conf", Typeflag: tar.TypeReg, Mode: 0o640, Size: int64(len(appConf)),
			PAXRecords: map[string]string{"SCHILY.xattr.user.kind": "config"}},
		{Name: "etc/link", Typeflag: tar.TypeSymlink, Linkname: "app.conf", Mode: 0o777},
	} {
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write([]byte(appConf))
		}
	}
	tw.Close()
	return buf.Bytes()
}

// bridge returns go-fuse's raw file system over a real layer of testTar,
// and its blob; first gets each first-opened path.
func bridge(t *testing.T, first func(string)) (fuse.RawFileSystem, *badBlob) {
	t.Helper()
	o := defaultOptions()
	o.firstOpen = first
	m, blob := bridgeOf(t, testTar(t), o)
	return m.raw, blob
}

// bridgeOf returns a Mounted, not mounted, over a real layer of the tar tb
// built with eopts, and its blob.
func bridgeOf(t testing.TB, tb []byte, o options, eopts ...estargz.Option) (*Mounted, *badBlob) {
	t.Helper()
	eb, err := estargz.Build(io.NewSectionReader(bytes.NewReader(tb), 0, int64(len(tb))), eopts...)
	if err != nil {
		t.Fatal(err)
	}
	defer eb.Close()
	data, err := io.ReadAll(eb)
	if err != nil {
		t.Fatal(err)
	}
	blob := &badBlob{data: data}
	toc, err := layer.ReadTOC(t.Context(), blob, eb.TOCDigest())
	if err != nil {
		t.Fatal(err)
	}
	store, err := cache.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	l, err := layer.New(toc, store)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(); store.Close() })
	modes, err := newIOModes(l.Index().Len())
	if err != nil {
		t.Fatal(err)
	}
	o.logger = slog.New(slog.DiscardHandler)
	m := newMounted("", l, o, modes)
	t.Cleanup(func() { m.raw.handles.closeAll(); modes.close() })
	return m, blob
}

func lookup(t *testing.T, raw fuse.RawFileSystem, parent uint64, name string) fuse.EntryOut {
	t.Helper()
	var out fuse.EntryOut
	if st := raw.Lookup(nil, &fuse.InHeader{NodeId: parent}, name, &out); !st.Ok() {
		t.Fatalf("lookup %s: %v", name, st)
	}
	return out
}

// readFile opens and reads node id whole through the bridge.
func readFile(raw fuse.RawFileSystem, id uint64) ([]byte, fuse.Status) {
	var open fuse.OpenOut
	if st := raw.Open(nil, &fuse.OpenIn{InHeader: fuse.InHeader{NodeId: id}}, &open); !st.Ok() {
		return nil, st
	}
	defer raw.Release(nil, &fuse.ReleaseIn{InHeader: fuse.InHeader{NodeId: id}, Fh: open.Fh})
	buf := make([]byte, 4096)
	res, st := raw.Read(nil, &fuse.ReadIn{InHeader: fuse.InHeader{NodeId: id}, Fh: open.Fh, Size: 4096}, buf)
	if !st.Ok() {
		return nil, st
	}
	b, st := res.Bytes(buf)
	return slices.Clone(b), st
}

func TestLookupAttrAndRead(t *testing.T) {
	raw, _ := bridge(t, nil)
	etc := lookup(t, raw, 1, "etc")
	if etc.Attr.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		t.Fatalf("etc: mode %o", etc.Attr.Mode)
	}
	conf := lookup(t, raw, etc.NodeId, "app.conf")
	if conf.Attr.Mode != syscall.S_IFREG|0o640 || conf.Attr.Size != uint64(len(appConf)) {
		t.Fatalf("app.conf: mode %o size %d", conf.Attr.Mode, conf.Attr.Size)
	}
	var out fuse.EntryOut
	// A missing name is a negative entry the kernel caches.
	if st := raw.Lookup(nil, &fuse.InHeader{NodeId: etc.NodeId}, "missing", &out); !st.Ok() || out.NodeId != 0 || out.EntryTimeout() == 0 {
		t.Errorf("lookup of a missing name: %v, node %d, timeout %v; want a negative entry", st, out.NodeId, out.EntryTimeout())
	}
	got, st := readFile(raw, conf.NodeId)
	if !st.Ok() || string(got) != appConf {
		t.Fatalf("read %q, %v", got, st)
	}
	var open fuse.OpenOut
	in := &fuse.OpenIn{InHeader: fuse.InHeader{NodeId: conf.NodeId}, Flags: syscall.O_WRONLY}
	if st := raw.Open(nil, in, &open); st != fuse.Status(syscall.EROFS) {
		t.Errorf("open for writing: %v, want EROFS", st)
	}
}

func TestSymlinkAndXattrs(t *testing.T) {
	raw, _ := bridge(t, nil)
	etc := lookup(t, raw, 1, "etc")
	link := lookup(t, raw, etc.NodeId, "link")
	if target, st := raw.Readlink(nil, &fuse.InHeader{NodeId: link.NodeId}); !st.Ok() || string(target) != "app.conf" {
		t.Errorf("readlink: %q, %v", target, st)
	}
	conf := lookup(t, raw, etc.NodeId, "app.conf")
	h := &fuse.InHeader{NodeId: conf.NodeId}
	dest := make([]byte, 64)
	if n, st := raw.GetXAttr(nil, h, "user.kind", dest); !st.Ok() || string(dest[:n]) != "config" {
		t.Errorf("getxattr: %q, %v", dest[:n], st)
	}
	if _, st := raw.GetXAttr(nil, h, "user.kind", dest[:2]); st != fuse.ERANGE {
		t.Errorf("getxattr into a short buffer: %v, want ERANGE", st)
	}
	if _, st := raw.GetXAttr(nil, h, "user.none", dest); st != fuse.ENODATA {
		t.Errorf("getxattr of a missing attribute: %v, want ENODATA", st)
	}
	if n, st := raw.ListXAttr(nil, h, dest); !st.Ok() || string(dest[:n]) != "user.kind\x00" {
		t.Errorf("listxattr: %q, %v", dest[:n], st)
	}
}

// TestBadChunkIsEIO: a chunk the registry keeps corrupting is never
// returned: the read fails with EIO.
func TestBadChunkIsEIO(t *testing.T) {
	raw, blob := bridge(t, nil)
	blob.corrupt = true
	etc := lookup(t, raw, 1, "etc")
	conf := lookup(t, raw, etc.NodeId, "app.conf")
	if got, st := readFile(raw, conf.NodeId); st != fuse.EIO {
		t.Fatalf("read of a corrupted chunk: %q, %v; want EIO", got, st)
	}
}

// TestFirstOpenReportedOnce: the first open of a file reports its absolute
// path; later opens report nothing.
func TestFirstOpenReportedOnce(t *testing.T) {
	var paths []string
	raw, _ := bridge(t, func(p string) { paths = append(paths, p) })
	etc := lookup(t, raw, 1, "etc")
	conf := lookup(t, raw, etc.NodeId, "app.conf")
	for range 3 {
		if _, st := readFile(raw, conf.NodeId); !st.Ok() {
			t.Fatal(st)
		}
	}
	if !slices.Equal(paths, []string{"/etc/app.conf"}) {
		t.Errorf("first opens reported %q, want [/etc/app.conf]", paths)
	}
}
