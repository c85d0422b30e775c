package cache

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

const (
	benchFileSize = 64 << 20
	benchReadSize = 128 << 10
)

// BenchmarkReadAt reads a complete 64 MiB entry sequentially in 128 KiB
// reads. Compare with BenchmarkReadAtOSFile for the cost of the cache.
func BenchmarkReadAt(b *testing.B) {
	s := openStore(b, b.TempDir())
	c := newContent(b, benchFileSize)
	e := openEntry(b, s, c)
	for off := 0; off < benchFileSize; off += 1 << 20 {
		write(b, e, c, off, off+1<<20)
	}
	benchmarkReads(b, e)
}

// BenchmarkReadAtOSFile does the reads of BenchmarkReadAt on a plain file.
func BenchmarkReadAtOSFile(b *testing.B) {
	c := newContent(b, benchFileSize)
	path := filepath.Join(b.TempDir(), "plain")
	if err := os.WriteFile(path, c.data, 0o600); err != nil {
		b.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	benchmarkReads(b, f)
}

func benchmarkReads(b *testing.B, r interface {
	ReadAt([]byte, int64) (int, error)
}) {
	p := make([]byte, benchReadSize)
	b.SetBytes(benchReadSize)
	b.ResetTimer()
	off := int64(0)
	for b.Loop() {
		if _, err := r.ReadAt(p, off); err != nil {
			b.Fatal(err)
		}
		if off += benchReadSize; off == benchFileSize {
			off = 0
		}
	}
}

// BenchmarkWriteAt writes 128 KiB chunks sequentially into fresh 64 MiB
// entries, with the presence journal and accounting of every write; a
// 256 MiB bound makes old entries evicted as it goes, as in steady state.
func BenchmarkWriteAt(b *testing.B) {
	s := openStore(b, b.TempDir(), WithMaxBytes(256<<20))
	p := newContent(b, benchReadSize).data
	var e *Entry
	n, off := 0, int64(benchFileSize)
	b.SetBytes(benchReadSize)
	b.ResetTimer()
	for b.Loop() {
		if off == benchFileSize {
			if e != nil {
				e.Close()
			}
			// Fake digests: the cache does not check content.
			n++
			var id [8]byte
			binary.LittleEndian.PutUint64(id[:], uint64(n))
			var err error
			if e, err = s.Entry(digest.FromBytes(id[:]), benchFileSize); err != nil {
				b.Fatal(err)
			}
			off = 0
		}
		if err := e.WriteAt(p, off); err != nil {
			b.Fatal(err)
		}
		off += benchReadSize
	}
	e.Close()
}

// BenchmarkSmallEntry stores one 4 KiB file per iteration in a fresh entry:
// create, write, close. A layer of small files (a Python stack, headers)
// costs this per file, on the path of every first read, read-ahead and
// stream. "xattr" is the store as it runs: one write makes the entry
// complete, so its presence is the data file's xattr and the data file is
// the one file created. "journal" is the same with the xattr refused (a
// file system without user xattrs), so the first write also creates the
// presence journal, as every entry did before the xattr.
func BenchmarkSmallEntry(b *testing.B) {
	b.Run("xattr", benchmarkSmallEntry)
	b.Run("journal", func(b *testing.B) {
		set := setCompleteXattr
		defer func() { setCompleteXattr = set }()
		setCompleteXattr = func(*os.File, []byte) error { return unix.ENOTSUP }
		benchmarkSmallEntry(b)
	})
}

func benchmarkSmallEntry(b *testing.B) {
	s := openStore(b, b.TempDir())
	p := newContent(b, 4<<10).data
	n := 0
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		n++
		var id [8]byte
		binary.LittleEndian.PutUint64(id[:], uint64(n))
		e, err := s.Entry(digest.FromBytes(id[:]), int64(len(p)))
		if err != nil {
			b.Fatal(err)
		}
		if err := e.WriteAt(p, 0); err != nil {
			b.Fatal(err)
		}
		if err := e.Close(); err != nil {
			b.Fatal(err)
		}
	}
}
