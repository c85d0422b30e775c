package node

import (
	"bytes"
	"encoding/binary"
	"log/slog"
	"os"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

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
	modes.opened(2, 1, 1, 7)
	modes.opened(4, 2, 1, 7)
	if modes.count(1) != -2 || modes.backing(1) != 7 {
		t.Fatalf("count %d backing %d, want -2 and 7", modes.count(1), modes.backing(1))
	}
	if b := modes.released(6, 1, 1); b != 0 {
		t.Fatalf("backing %d handed back with a passthrough handle left", b)
	}
	if b := modes.released(8, 2, 1); b != 7 || modes.count(1) != 0 || modes.backing(1) != 0 {
		t.Fatalf("last release: backing %d, count %d", b, modes.count(1))
	}
	modes.opened(10, 3, 0, 0)
	if modes.count(0) != 1 || modes.released(12, 3, 0) != 0 || modes.count(0) != 0 {
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

// TestResentRequestsCountedOnce: an OPEN or RELEASE that a process counted
// but died before answering is sent again by the kernel to the process
// that resumes (FUSE_NOTIFY_RESEND, the unique's top bit set), which must
// answer it as it was counted, not count it again. Counting a RELEASE
// twice left an inode's count one too low, and the kernel then failed
// (EIO) an open in the other mode while a handle was still open.
func TestResentRequestsCountedOnce(t *testing.T) {
	raw, _ := bridge(t, nil)
	etc := lookup(t, raw, 1, "etc")
	conf := lookup(t, raw, etc.NodeId, "app.conf")
	id := index.ID(conf.NodeId - 1)
	open := func(r fuse.RawFileSystem, unique uint64) fuse.OpenOut {
		t.Helper()
		var out fuse.OpenOut
		if st := r.Open(nil, &fuse.OpenIn{InHeader: fuse.InHeader{NodeId: conf.NodeId, Unique: unique}}, &out); !st.Ok() {
			t.Fatal(st)
		}
		return out
	}
	release := func(r fuse.RawFileSystem, unique, fh uint64) {
		r.Release(nil, &fuse.ReleaseIn{InHeader: fuse.InHeader{NodeId: conf.NodeId, Unique: unique}, Fh: fh})
	}
	first := open(raw, 10) // counted; the process dies before the reply
	second := open(raw, 12)

	next := successor(t, raw)
	again := open(next, 10|uniqueResend)
	if again.Fh != first.Fh || again.OpenFlags != first.OpenFlags {
		t.Errorf("the open sent again was answered with handle %x flags %x, want the counted %x %x", again.Fh, again.OpenFlags, first.Fh, first.OpenFlags)
	}
	if n := next.handles.modes.count(id); n != 2 {
		t.Fatalf("%d handles counted after an open sent again, want 2", n)
	}
	fresh := open(next, 14|uniqueResend) // read, never counted, by the dead process
	if n := next.handles.modes.count(id); n != 3 || fresh.Fh == first.Fh {
		t.Fatalf("an open sent again that no process counted: %d handles, handle %x", n, fresh.Fh)
	}
	buf := make([]byte, 64)
	if _, st := next.Read(nil, &fuse.ReadIn{InHeader: fuse.InHeader{NodeId: conf.NodeId}, Fh: again.Fh, Size: 64}, buf); !st.Ok() {
		t.Fatalf("read of the handle of an open sent again: %v", st)
	}
	release(next, 16, second.Fh) // counted; this process dies before the reply

	last := successor(t, next)
	release(last, 16|uniqueResend, second.Fh)
	if n := last.handles.modes.count(id); n != 2 {
		t.Fatalf("%d handles counted after a release sent again, want 2", n)
	}
	release(last, 18, first.Fh)
	release(last, 20, fresh.Fh)
	if n := last.handles.modes.count(id); n != 0 {
		t.Errorf("%d handles counted after every release, want 0", n)
	}
}

// TestJournalSettlesAHalfDoneChange: a process that dies after recording a
// change but before storing it did not make it; one that dies after
// storing it but before marking it done did.
func TestJournalSettlesAHalfDoneChange(t *testing.T) {
	for _, stored := range []bool{false, true} {
		modes, err := newIOModes(3)
		if err != nil {
			t.Fatal(err)
		}
		modes.opened(2, 1, 2, 0)
		next := modeEntry{count: 2}
		modes.journal.begin(4, 9, 2, modes.entries[2].Load(), next.word()) // never done
		if stored {
			modes.entries[2].Store(next.word())
		}
		f, err := dupFile(int(modes.file.Fd()), "m")
		if err != nil {
			t.Fatal(err)
		}
		modes.close()
		resumed, err := mapIOModes(f, 3)
		if err != nil {
			t.Fatal(err)
		}
		fh, after, ok := resumed.counted(4 | uniqueResend)
		if ok != stored || ok && (fh != 9 || after != next) {
			t.Errorf("stored %v: counted %v, handle %d, entry %+v", stored, ok, fh, after)
		}
		if _, _, ok := resumed.counted(2 | uniqueResend); !ok {
			t.Errorf("stored %v: a change marked done was lost", stored)
		}
		resumed.close()
	}
}

// TestIOModesOfAnEarlierVersion: a table of counts only, as a fused of an
// earlier version hands over, is taken with its counts and given a
// journal; one too small for the layer is refused.
func TestIOModesOfAnEarlierVersion(t *testing.T) {
	fd, err := unix.MemfdCreate("old", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "old")
	var old [3 * ioModeBytes]byte
	binary.NativeEndian.PutUint32(old[8:], uint32(0xffffffff)) // inode 1: -1 ...
	binary.NativeEndian.PutUint32(old[12:], 5)                 // ... with backing 5
	binary.NativeEndian.PutUint32(old[16:], 2)                 // inode 2: 2 cached
	if _, err := f.Write(old[:]); err != nil {
		t.Fatal(err)
	}
	small, err := dupFile(int(f.Fd()), "small")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mapIOModes(small, 4); err == nil {
		t.Error("a table too small for the layer was mapped")
	}
	modes, err := mapIOModes(f, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer modes.close()
	if modes.count(1) != -1 || modes.backing(1) != 5 || modes.count(2) != 2 || modes.count(0) != 0 {
		t.Fatalf("counts of the earlier table: %+v %+v %+v", modes.entry(0), modes.entry(1), modes.entry(2))
	}
	if b := modes.released(2, 1, 1); b != 5 {
		t.Errorf("last release handed back backing %d, want 5", b)
	}
}

// TestIOModesOfAFileThatCannotBeRead: a table whose file cannot even be
// looked at is an error, not a panic.
func TestIOModesOfAFileThatCannotBeRead(t *testing.T) {
	modes, err := newIOModes(3)
	if err != nil {
		t.Fatal(err)
	}
	defer modes.close()
	f, err := dupFile(int(modes.file.Fd()), "m")
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := mapIOModes(f, 3); err == nil {
		t.Error("a closed table was mapped")
	}
}
