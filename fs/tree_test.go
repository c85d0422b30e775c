package fs_test

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/containerd/stargz-snapshotter/estargz"
	"golang.org/x/sys/unix"

	"github.com/lazysnap/lazysnap/internal/testenv"
)

// treeEntries is a layer with every kind of entry a tar may hold.
func treeEntries() []tentry {
	long := strings.Repeat("n", 240)
	deep := strings.Repeat("d/", 30)
	es := []tentry{
		dir("etc/", 0o755),
		{name: "etc/hostname", typ: tar.TypeReg, mode: 0o600, uid: 1000, gid: 1001, size: 9, data: []byte("lazysnap\n")},
		reg("etc/empty", 0, 0),
		dir("bin/", 0o755),
		{name: "bin/tool", typ: tar.TypeReg, mode: 0o4755, size: 3<<20 + 123, seed: 1},
		// Hard links carry their file's metadata, as Docker and BuildKit
		// write them (the last entry naming a file sets its mode:
		// TestHardlinkEntryMetadataWins in fs/index).
		{name: "bin/tool2", typ: tar.TypeLink, mode: 0o4755, link: "bin/tool"},
		{name: "bin/tool3", typ: tar.TypeLink, mode: 0o4755, link: "/bin/tool"},
		{name: "bin/sh", typ: tar.TypeSymlink, mode: 0o777, link: "/bin/tool"},
		{name: "lib", typ: tar.TypeSymlink, mode: 0o777, link: "usr/lib"},
		dir("usr/", 0o755),
		{name: "usr/lib/", typ: tar.TypeDir, mode: 0o750, uid: 5, gid: 6},
		{name: "usr/lib/libx.so", typ: tar.TypeReg, mode: 0o755, size: 1 << 20, seed: 2,
			xattrs: map[string]string{"user.mime": "application/x-sharedlib", "user.empty": ""}},
		{name: "usr/lib/small1", typ: tar.TypeReg, mode: 0o644, size: 100, seed: 3},
		{name: "usr/lib/small2", typ: tar.TypeReg, mode: 0o644, size: 5000, seed: 4},
		dir("dev/", 0o755),
		{name: "dev/null", typ: tar.TypeChar, mode: 0o666, major: 1, minor: 3},
		{name: "dev/sda", typ: tar.TypeBlock, mode: 0o660, gid: 6, major: 8, minor: 0},
		{name: "dev/big", typ: tar.TypeChar, mode: 0o600, major: 300, minor: 70000},
		{name: "dev/fifo", typ: tar.TypeFifo, mode: 0o644},
		dir("old/", 0o755),
		{name: "old/.wh.gone", typ: tar.TypeReg, mode: 0o644},
		dir("opq/", 0o755),
		{name: "opq/.wh..wh..opq", typ: tar.TypeReg, mode: 0o644},
		text("opq/kept", "kept\n"),
		dir("long/", 0o755),
		reg("long/"+long, 10, 5),
		{name: "./dot/slash/", typ: tar.TypeDir, mode: 0o711},
		text("./dot/slash/file", "dot\n"),
		text("/abs/file", "abs\n"), // parent "abs" is implied
		text("dup", "first\n"),
		text("dup", "second, longer\n"), // the last entry of a name wins
	}
	for i := range 30 {
		es = append(es, dir(deep[:2*(i+1)], 0o755))
	}
	es = append(es, text(deep+"leaf", "leaf\n"))
	return es
}

// want is what the mount must show for one path.
type want struct {
	mode         uint32
	uid, gid     uint32
	size         int64
	nlink        uint64
	mtime        int64
	major, minor uint32
	link         string
	sum          [32]byte
	xattrs       map[string]string
}

// expectTree computes what extracting es (as containerd's tar applier would,
// keeping whiteouts as overlayfs represents them) gives.
func expectTree(es []tentry) map[string]*want {
	implied := func() *want { return &want{mode: syscall.S_IFDIR | 0o755, mtime: 0} }
	out := map[string]*want{".": implied()}
	targets := map[string]string{} // hardlink name -> target
	var parentDirs func(p string)
	parentDirs = func(p string) {
		d := path.Dir(p)
		if d == "." {
			return
		}
		if _, ok := out[d]; !ok {
			out[d] = implied()
		}
		parentDirs(d)
	}
	for _, e := range es {
		p := path.Clean(strings.TrimLeft(e.name, "/"))
		d, b := path.Split(p)
		d = path.Clean(d)
		parentDirs(p)
		switch {
		case b == ".wh..wh..opq":
			out[d].xattrs = map[string]string{"trusted.overlay.opaque": "y"}
			continue
		case strings.HasPrefix(b, ".wh."):
			out[path.Join(d, b[4:])] = &want{mode: syscall.S_IFCHR, uid: uint32(e.uid), gid: uint32(e.gid), mtime: testMtime.Unix(), nlink: 1}
			continue
		case e.typ == tar.TypeLink:
			targets[p] = path.Clean(strings.TrimLeft(e.link, "/"))
			continue
		}
		w := &want{mode: uint32(e.mode), uid: uint32(e.uid), gid: uint32(e.gid), mtime: testMtime.Unix()}
		if e.typ != tar.TypeDir {
			w.nlink = 1
		}
		if old, ok := out[p]; ok && e.typ == tar.TypeDir {
			w.xattrs = old.xattrs
		}
		switch e.typ {
		case tar.TypeDir:
			w.mode |= syscall.S_IFDIR
		case tar.TypeReg:
			w.mode |= syscall.S_IFREG
			w.size, w.sum = e.size, e.sha256()
		case tar.TypeSymlink:
			w.mode |= syscall.S_IFLNK
			w.link = e.link
		case tar.TypeChar:
			w.mode |= syscall.S_IFCHR
		case tar.TypeBlock:
			w.mode |= syscall.S_IFBLK
		case tar.TypeFifo:
			w.mode |= syscall.S_IFIFO
		}
		w.major, w.minor = uint32(e.major), uint32(e.minor)
		if len(e.xattrs) > 0 {
			w.xattrs = map[string]string{}
			for k, v := range e.xattrs {
				w.xattrs[k] = v
			}
		}
		out[p] = w
	}
	for l, tgt := range targets {
		out[tgt].nlink++
		out[l] = out[tgt]
	}
	for p, w := range out {
		if w.mode&syscall.S_IFMT == syscall.S_IFDIR {
			w.nlink += 2
		}
		if p != "." && out[p].mode&syscall.S_IFMT == syscall.S_IFDIR {
			out[path.Dir(p)].nlink++
		}
	}
	return out
}

// compareTree checks every path of root against the expectation.
func compareTree(t *testing.T, root string, wants map[string]*want) {
	t.Helper()
	seen := map[string]bool{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		seen[rel] = true
		w, ok := wants[rel]
		if !ok {
			t.Errorf("unexpected %s", rel)
			return nil
		}
		checkEntry(t, p, rel, w)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for p := range wants {
		if !seen[p] {
			t.Errorf("missing %s", p)
		}
	}
}

func checkEntry(t *testing.T, p, rel string, w *want) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Errorf("%s: %v", rel, err)
		return
	}
	if st.Mode != w.mode || st.Uid != w.uid || st.Gid != w.gid || st.Mtim.Sec != w.mtime {
		t.Errorf("%s: mode %o uid %d gid %d mtime %d, want %o %d %d %d",
			rel, st.Mode, st.Uid, st.Gid, st.Mtim.Sec, w.mode, w.uid, w.gid, w.mtime)
	}
	if st.Nlink != w.nlink {
		t.Errorf("%s: nlink %d, want %d", rel, st.Nlink, w.nlink)
	}
	if typ := w.mode & syscall.S_IFMT; typ == syscall.S_IFCHR || typ == syscall.S_IFBLK {
		if unix.Major(st.Rdev) != w.major || unix.Minor(st.Rdev) != w.minor {
			t.Errorf("%s: device %d:%d, want %d:%d", rel, unix.Major(st.Rdev), unix.Minor(st.Rdev), w.major, w.minor)
		}
	}
	switch w.mode & syscall.S_IFMT {
	case syscall.S_IFREG:
		checkContent(t, p, rel, w)
	case syscall.S_IFLNK:
		if got, err := os.Readlink(p); err != nil || got != w.link {
			t.Errorf("%s: readlink %q, %v, want %q", rel, got, err, w.link)
		}
		if st.Size != int64(len(w.link)) {
			t.Errorf("%s: lstat size %d, want the target's length %d", rel, st.Size, len(w.link))
		}
	}
	checkXattrs(t, p, rel, w.xattrs)
}

func checkContent(t *testing.T, p, rel string, w *want) {
	t.Helper()
	if st, err := os.Stat(p); err != nil || st.Size() != w.size {
		t.Errorf("%s: size %v (%v), want %d", rel, st.Size(), err, w.size)
		return
	}
	f, err := os.Open(p)
	if err != nil {
		t.Errorf("%s: %v", rel, err)
		return
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Errorf("%s: reading: %v", rel, err)
		return
	}
	if !bytes.Equal(h.Sum(nil), w.sum[:]) {
		t.Errorf("%s: content differs from the tar", rel)
	}
}

func checkXattrs(t *testing.T, p, rel string, want map[string]string) {
	t.Helper()
	buf := make([]byte, 4096)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		t.Errorf("%s: listxattr: %v", rel, err)
		return
	}
	var names []string
	for _, s := range strings.Split(string(buf[:n]), "\x00") {
		if s != "" {
			names = append(names, s)
		}
	}
	var wantNames []string
	for k := range want {
		wantNames = append(wantNames, k)
	}
	sort.Strings(names)
	sort.Strings(wantNames)
	if strings.Join(names, ",") != strings.Join(wantNames, ",") {
		t.Errorf("%s: xattrs %q, want %q", rel, names, wantNames)
	}
	for k, v := range want {
		n, err := unix.Lgetxattr(p, k, buf)
		if err != nil || string(buf[:n]) != v {
			t.Errorf("%s: xattr %s = %q (%v), want %q", rel, k, buf[:max(n, 0)], err, v)
		}
	}
}

// TestMountMatchesTar mounts converted layers and compares every file,
// link, mode, owner, device, xattr and whiteout with the source tar, with
// one chunk per frame and with small files sharing frames.
func TestMountMatchesTar(t *testing.T) {
	testenv.RequireFUSE(t)
	reg := testenv.StartRegistry(t)
	es := treeEntries()
	for _, tc := range []struct {
		name string
		opts []estargz.Option
	}{
		{"chunks", []estargz.Option{estargz.WithChunkSize(256 << 10)}},
		{"shared-frames", []estargz.Option{estargz.WithChunkSize(256 << 10), estargz.WithMinChunkSize(64 << 10)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := buildLayer(t, es, tc.opts...)
			ref := push(t, reg.Host, "tree/"+tc.name+":v1", l)
			f := newFS(t)
			mp := mount(t, f, ref, l)
			compareTree(t, mp, expectTree(es))
			// A second walk is served from the cache (and passthrough).
			compareTree(t, mp, expectTree(es))
			if s := f.Stats()[mp]; s.FetchedPercent != 100 || s.BytesFetched == 0 {
				t.Errorf("after reading everything: %+v", s)
			}
		})
	}
}
