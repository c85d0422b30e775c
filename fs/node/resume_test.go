package node

import (
	"bytes"
	"log/slog"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/lazysnap/lazysnap/fs/index"
)

// successor returns the raw file system a process resuming raw's mount
// would serve: the same layer, the open-mode table handed over (mapped
// again from a duplicate of its memfd), new handles.
func successor(t *testing.T, raw fuse.RawFileSystem) *rawFS {
	t.Helper()
	old := raw.(*rawFS)
	f, err := dupFile(int(old.handles.modes.file.Fd()), "modes")
	if err != nil {
		t.Fatal(err)
	}
	modes, err := mapIOModes(f, old.t.idx.Len())
	if err != nil {
		t.Fatal(err)
	}
	o := defaultOptions()
	o.logger = slog.New(slog.DiscardHandler)
	m := newMounted("", old.t.layer, o, modes)
	t.Cleanup(func() { m.raw.handles.closeAll(); modes.close() })
	return m.raw
}

// TestSuccessorServesEarlierHandles: after a resume, node IDs and file
// handles the earlier process handed out work as they did; a directory
// needs no handle; the open count an earlier process left is seen, and
// released, by the successor.
func TestSuccessorServesEarlierHandles(t *testing.T) {
	raw, _ := bridge(t, nil)
	etc := lookup(t, raw, 1, "etc")
	conf := lookup(t, raw, etc.NodeId, "app.conf")
	var open fuse.OpenOut
	if st := raw.Open(nil, &fuse.OpenIn{InHeader: fuse.InHeader{NodeId: conf.NodeId}}, &open); !st.Ok() {
		t.Fatal(st)
	}
	if open.OpenFlags&fuse.FOPEN_NOFLUSH == 0 {
		t.Error("an open without FOPEN_NOFLUSH: a close would wait for a server being replaced")
	}

	next := successor(t, raw)
	id := index.ID(conf.NodeId - 1)
	if n := next.handles.modes.count(id); n != 1 {
		t.Fatalf("the successor sees %d cached-mode handles of app.conf, want 1", n)
	}
	// No LOOKUP in the successor: the node IDs are the TOC's.
	var attr fuse.AttrOut
	if st := next.GetAttr(nil, &fuse.GetAttrIn{InHeader: fuse.InHeader{NodeId: conf.NodeId}}, &attr); !st.Ok() || attr.Size != uint64(len(appConf)) {
		t.Fatalf("getattr in the successor: %v, size %d", st, attr.Size)
	}
	buf := make([]byte, 64)
	res, st := next.Read(nil, &fuse.ReadIn{InHeader: fuse.InHeader{NodeId: conf.NodeId}, Fh: open.Fh, Size: 64}, buf)
	if !st.Ok() {
		t.Fatalf("read of the earlier process's handle: %v", st)
	}
	if got, _ := res.Bytes(buf); !bytes.Equal(got, []byte(appConf)) {
		t.Fatalf("read %q, want %q", got, appConf)
	}
	var dir fuse.OpenOut
	if st := next.OpenDir(nil, &fuse.OpenIn{InHeader: fuse.InHeader{NodeId: etc.NodeId}}, &dir); !st.Ok() {
		t.Fatal(st)
	}
	list := fuse.NewDirEntryList(make([]byte, 4096), 0)
	if st := next.ReadDir(nil, &fuse.ReadIn{InHeader: fuse.InHeader{NodeId: etc.NodeId}, Fh: 12345}, list); !st.Ok() || len(list.Bytes()) == 0 {
		t.Fatalf("readdir with a handle no process issued: %v, %d bytes", st, len(list.Bytes()))
	}
	next.Release(nil, &fuse.ReleaseIn{InHeader: fuse.InHeader{NodeId: conf.NodeId}, Fh: open.Fh})
	if n := next.handles.modes.count(id); n != 0 {
		t.Errorf("%d handles of app.conf counted after its release, want 0", n)
	}
	// A handle of this process that it released is a kernel bug, not a
	// handle to open again.
	var again fuse.OpenOut
	next.Open(nil, &fuse.OpenIn{InHeader: fuse.InHeader{NodeId: conf.NodeId}}, &again)
	next.Release(nil, &fuse.ReleaseIn{InHeader: fuse.InHeader{NodeId: conf.NodeId}, Fh: again.Fh})
	if _, st := next.Read(nil, &fuse.ReadIn{InHeader: fuse.InHeader{NodeId: conf.NodeId}, Fh: again.Fh, Size: 64}, buf); st != fuse.Status(syscall.EBADF) {
		t.Errorf("read of a released handle: %v, want EBADF", st)
	}
	if st := next.GetAttr(nil, &fuse.GetAttrIn{InHeader: fuse.InHeader{NodeId: 1 << 40}}, &attr); st != fuse.Status(syscall.ESTALE) {
		t.Errorf("getattr of a node ID no TOC inode has: %v, want ESTALE", st)
	}
}

// TestIOModesFollowTheKernel: passthrough handles share one backing ID, and
// the last one's release hands it back; cached and passthrough never mix.
func TestIOModesFollowTheKernel(t *testing.T) {
	modes, err := newIOModes(2)
	if err != nil {
		t.Fatal(err)
	}
	defer modes.close()
	modes.opened(1, 7)
	modes.opened(1, 7)
	if modes.count(1) != -2 || modes.backing(1) != 7 {
		t.Fatalf("count %d backing %d, want -2 and 7", modes.count(1), modes.backing(1))
	}
	if b := modes.released(1); b != 0 {
		t.Fatalf("backing %d handed back with a passthrough handle left", b)
	}
	if b := modes.released(1); b != 7 || modes.count(1) != 0 || modes.backing(1) != 0 {
		t.Fatalf("last release: backing %d, count %d", b, modes.count(1))
	}
	modes.opened(0, 0)
	if modes.count(0) != 1 || modes.released(0) != 0 || modes.count(0) != 0 {
		t.Fatalf("cached handle counted wrong: %d", modes.count(0))
	}
	f, err := dupFile(int(modes.file.Fd()), "m")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mapIOModes(f, 1000); err == nil {
		t.Error("a table too small for the layer was mapped")
	}
}
