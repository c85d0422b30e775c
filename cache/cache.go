// Package cache is lazysnap's on-disk store of verified, uncompressed file
// contents. An entry is keyed by the content digest of a whole regular file
// (the eStargz TOC "digest" field), so a file that appears in several layers
// or images is fetched and stored once. An entry is a sparse file of the
// file's full size plus a persisted record of which byte ranges are present;
// chunks are written into it as they are fetched and verified, so a fully
// present entry is an ordinary file the kernel can serve directly (FUSE
// passthrough).
//
// The cache trusts its caller to write only verified bytes: callers verify
// every chunk against its chunk digest before WriteAt.
package cache

import (
	"os"

	"github.com/opencontainers/go-digest"
)

// Store is a size-bounded cache of file contents, safe for concurrent use.
type Store struct {
	// implementation detail
}

// Option configures a Store.
type Option func(*options)

type options struct {
	maxBytes int64
}

// defaultOptions holds every default in one place.
func defaultOptions() options {
	return options{
		maxBytes: 10 << 30, // The default is 10 GiB.
	}
}

// WithMaxBytes bounds the bytes the store keeps on disk (allocated bytes of
// present ranges). Past it, least recently used entries that are not open are
// evicted. The default is 10 GiB.
func WithMaxBytes(n int64) Option { return func(o *options) { o.maxBytes = n } }

// Open opens (or creates) a store in dir, loading what earlier runs left.
func Open(dir string, opts ...Option) (*Store, error) { panic("unimplemented") }

// Entry returns the entry for the file with content digest d and size size,
// creating it if needed. The caller must Close it. Entries with the same
// digest share state.
func (s *Store) Entry(d digest.Digest, size int64) (*Entry, error) { panic("unimplemented") }

// Hold records that owner (for example a mounted layer) uses the entries ds.
// Held entries are kept until Drop, unless the size bound forces eviction.
func (s *Store) Hold(owner string, ds []digest.Digest) error { panic("unimplemented") }

// Drop releases everything owner holds and deletes entries that no owner
// holds any more and that are not open.
func (s *Store) Drop(owner string) error { panic("unimplemented") }

// Stats reports the store's current size and counters.
func (s *Store) Stats() Stats { panic("unimplemented") }

// Close flushes state and closes the store.
func (s *Store) Close() error { panic("unimplemented") }

// Stats are cache counters, ready for export as metrics.
type Stats struct {
	Entries   int
	Bytes     int64 // bytes of present ranges on disk
	Hits      int64 // ReadAt calls served from present ranges
	Misses    int64 // Has calls that found a range missing
	Evictions int64
}

// Entry is one cached file. Safe for concurrent use.
type Entry struct {
	// implementation detail
}

// Has reports whether [off, off+n) is fully present.
func (e *Entry) Has(off, n int64) bool { panic("unimplemented") }

// ReadAt reads present bytes. Reading a range that is not present is an
// error (ErrNotPresent), never zeros.
func (e *Entry) ReadAt(p []byte, off int64) (int, error) { panic("unimplemented") }

// WriteAt stores verified bytes at off and then marks them present. The
// presence record is persisted so a restarted daemon finds them.
func (e *Entry) WriteAt(p []byte, off int64) error { panic("unimplemented") }

// Complete reports whether every byte of the file is present.
func (e *Entry) Complete() bool { panic("unimplemented") }

// File returns the backing file, read-only, for passthrough once Complete.
func (e *Entry) File() (*os.File, error) { panic("unimplemented") }

// Close releases the caller's handle.
func (e *Entry) Close() error { panic("unimplemented") }
