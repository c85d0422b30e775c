package fs_test

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/stargz-snapshotter/estargz"

	lfs "github.com/lazysnap/lazysnap/fs"
	"github.com/lazysnap/lazysnap/fs/layer"
	"github.com/lazysnap/lazysnap/internal/testenv"
)

// elfLibrary returns a 64-bit ELF library of size random bytes whose
// loader maps all of it, its last code bytes executable.
func elfLibrary(t *testing.T, size, code int64, seed uint64) []byte {
	t.Helper()
	data := make([]byte, size)
	rng := rand.NewChaCha8([32]byte{byte(seed)})
	rng.Read(data)
	var hdr bytes.Buffer
	h := elf.Header64{Type: uint16(elf.ET_DYN), Machine: uint16(elf.EM_X86_64), Version: uint32(elf.EV_CURRENT),
		Phoff: 64, Ehsize: 64, Phentsize: 56, Phnum: 2}
	copy(h.Ident[:], elf.ELFMAG)
	h.Ident[elf.EI_CLASS], h.Ident[elf.EI_DATA], h.Ident[elf.EI_VERSION] = byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT)
	progs := []elf.Prog64{
		{Type: uint32(elf.PT_LOAD), Flags: uint32(elf.PF_R), Off: 0, Filesz: uint64(size - code), Memsz: uint64(size - code)},
		{Type: uint32(elf.PT_LOAD), Flags: uint32(elf.PF_R | elf.PF_X), Off: uint64(size - code), Vaddr: uint64(size - code),
			Filesz: uint64(code), Memsz: uint64(code)},
	}
	for _, v := range []any{h, progs} {
		if err := binary.Write(&hdr, binary.LittleEndian, v); err != nil {
			t.Fatal(err)
		}
	}
	copy(data, hdr.Bytes())
	return data
}

// fileStats sums the layers' counts of files fetched whole on their
// second miss and of files left to their reads.
func fileStats(f *lfs.FS) (whole, leftToReads int64) {
	for _, s := range f.Stats() {
		whole += s.WholeFiles
		leftToReads += s.FilesLeftToReads
	}
	return whole, leftToReads
}

// TestDataLibraryLeftToItsReads: a library that is mostly data (as ICU's
// tables: 31 MB, 261 bytes of code) is not fetched whole when two of its
// reads miss, its head then its end; a library of code is. Before, both
// were, and node's start-up fetched 10 MB of ICU it never read.
func TestDataLibraryLeftToItsReads(t *testing.T) {
	testenv.RequireFUSE(t)
	const size = 10 << 20
	libs := map[string][]byte{
		"libdata.so": elfLibrary(t, size, 4096, 1),
		"libcode.so": elfLibrary(t, size, size/2, 2),
	}
	// Between the two, more than a read's tail (layer.DefaultReadAheadBytes)
	// of what does not compress: the tail of the data library's last read
	// must not bring the code library's head, whose read would then not
	// miss.
	es := []tentry{dir("lib/", 0o755),
		{name: "lib/libdata.so", typ: tar.TypeReg, mode: 0o755, size: size, data: libs["libdata.so"]},
		reg("lib/filler", 2*layer.DefaultReadAheadBytes, 3),
		{name: "lib/libcode.so", typ: tar.TypeReg, mode: 0o755, size: size, data: libs["libcode.so"]},
	}
	reg := testenv.StartRegistry(t)
	l := buildLayer(t, es, estargz.WithChunkSize(1<<20))
	push(t, reg.Host, "libs/data:v1", l)
	f := newFS(t, lfs.WithPrefetch(false), lfs.WithBackgroundFetch(false), lfs.WithVerifyDiffID(false))
	mp := mount(t, f, reg.Host+"/libs/data:v1", l)

	readHeadAndEnd := func(name string) {
		t.Helper()
		file, err := os.Open(filepath.Join(mp, "lib", name))
		if err != nil {
			t.Fatal(err)
		}
		defer file.Close()
		for _, off := range []int64{0, size - 4096} {
			got := make([]byte, 4096)
			if _, err := file.ReadAt(got, off); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, libs[name][off:off+4096]) {
				t.Fatalf("%s at %d: content differs", name, off)
			}
		}
	}
	readHeadAndEnd("libdata.so")
	if whole, left := fileStats(f); whole != 0 || left != 1 {
		t.Errorf("after two missed reads of the data library: %d files fetched whole, %d left to their reads; want 0 and 1", whole, left)
	}
	readHeadAndEnd("libcode.so")
	if whole, left := fileStats(f); whole != 1 || left != 1 {
		t.Errorf("after two missed reads of the code library: %d files fetched whole, %d left to their reads; want 1 and 1", whole, left)
	}
}
