// Package cache is lazysnap's on-disk store of verified, uncompressed file
// contents. An entry is keyed by a digest the caller chooses; lazysnap uses
// the file's content key (package fs/index: a hash of the file's size and
// of its chunks' digests, which every stored byte is checked against, never
// a digest a TOC merely claims), so a file that appears in several layers
// or images is fetched and stored once, and one image cannot plant bytes
// under another's key. An entry is a sparse file of the
// file's full size plus a persisted record of which byte ranges are present;
// chunks are written into it as they are fetched and verified, so a fully
// present entry is an ordinary file the kernel can serve directly (FUSE
// passthrough).
//
// The cache trusts its caller to write only verified bytes: callers verify
// every chunk against its chunk digest before WriteAt. Bytes on disk can rot
// between runs, though, so the cache also remembers, in memory only, which
// bytes this process wrote or was told it checked (Verified, MarkVerified);
// bytes loaded from an earlier run are present but unverified until the
// caller checks them, and Discard drops those that fail.
//
// On disk, a store directory holds files/<algorithm>/<hex> (the sparse data)
// and files/<algorithm>/<hex>.ranges (its presence journal, see journal.go),
// except for an entry one write made complete: its presence is the data
// file's extended attribute user.lazysnap.complete, and it has no journal.
package cache

import (
	"container/list"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"

	// Register the hashes so digest.Validate accepts their algorithms.
	_ "crypto/sha256"
	_ "crypto/sha512"
)

// ErrNotPresent is returned (wrapped) when reading bytes that are not in the
// cache yet. The caller fetches them and retries.
var ErrNotPresent = errors.New("range not present in cache")

// Store is a size-bounded cache of file contents, safe for concurrent use.
type Store struct {
	dir  string
	opts options
	lock *os.File // flock held on dir while open

	hits, misses, evictions atomic.Int64

	// mu guards the fields below and, of every entryState, the fields
	// documented as guarded by Store.mu. It is never held while waiting for
	// an entry's mutex except to open or close the entry's files.
	mu      sync.Mutex
	closed  bool
	entries map[digest.Digest]*entryState
	lru     *list.List // of *entryState; front is most recently used
	owners  map[string]map[digest.Digest]struct{}
	holders map[digest.Digest]int // how many owners hold each digest
	bytes   int64                 // present bytes of all entries
}

// Option configures a Store.
type Option func(*options)

type options struct {
	maxBytes int64
	logger   *slog.Logger
}

// DefaultMaxBytes is the default of WithMaxBytes; the daemon's
// configuration shows it (cmd/lazysnap reads it rather than repeating it).
const DefaultMaxBytes int64 = 10 << 30

// defaultOptions holds every default in one place.
func defaultOptions() options {
	return options{
		maxBytes: DefaultMaxBytes, // The default is 10 GiB.
		logger:   slog.Default(),
	}
}

// WithMaxBytes bounds the bytes the store keeps on disk (allocated bytes of
// present ranges). Past it, least recently used entries that are not open are
// evicted. The default is 10 GiB.
func WithMaxBytes(n int64) Option { return func(o *options) { o.maxBytes = n } }

// WithLogger sets the logger for events worth an operator's attention
// (discarded journals, evictions). The default is slog.Default().
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// Open opens (or creates) a store in dir, loading what earlier runs left.
// Only one Store may have dir open at a time, across processes.
func Open(dir string, opts ...Option) (*Store, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("cache: create %s: %w", dir, err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	s := &Store{
		dir:     dir,
		opts:    o,
		lock:    lock,
		entries: make(map[digest.Digest]*entryState),
		lru:     list.New(),
		owners:  make(map[string]map[digest.Digest]struct{}),
		holders: make(map[digest.Digest]int),
	}
	if err := s.load(); err != nil {
		lock.Close()
		return nil, fmt.Errorf("cache: open %s: %w", dir, err)
	}
	return s, nil
}

// Entry returns the entry for the file with content digest d and size size,
// creating it if needed. The caller must Close it. Entries with the same
// digest share state.
//
// Asking for a digest the store knows with another size fails with
// errdefs.ErrInvalidArgument: one content digest cannot have two sizes, so
// the TOC that asks is wrong or hostile.
func (s *Store) Entry(d digest.Digest, size int64) (*Entry, error) {
	if err := validateDigest(d); err != nil {
		return nil, err
	}
	if size < 0 {
		return nil, fmt.Errorf("cache: entry %s: negative size %d: %w", d, size, errdefs.ErrInvalidArgument)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("cache: entry %s: store is closed: %w", d, errdefs.ErrFailedPrecondition)
	}
	st, ok := s.entries[d]
	if ok && st.size != size {
		return nil, fmt.Errorf("cache: entry %s has size %d, asked for %d: %w",
			d, st.size, size, errdefs.ErrInvalidArgument)
	}
	if !ok {
		var err error
		if st, err = s.createLocked(d, size); err != nil {
			return nil, err
		}
	} else if st.refs == 0 {
		if err := st.openFiles(); err != nil {
			return nil, fmt.Errorf("cache: entry %s: %w", d, err)
		}
	}
	st.refs++
	s.lru.MoveToFront(st.elem)
	return &Entry{store: s, state: st}, nil
}

// createLocked creates the files of a new entry, opened.
func (s *Store) createLocked(d digest.Digest, size int64) (*entryState, error) {
	st := newEntryState(s.dir, d, size)
	if err := os.MkdirAll(filepath.Dir(st.dataPath()), 0o700); err != nil {
		return nil, fmt.Errorf("cache: create entry %s: %w", d, err)
	}
	if err := st.create(); err != nil {
		st.remove()
		return nil, fmt.Errorf("cache: create entry %s: %w", d, err)
	}
	st.elem = s.lru.PushFront(st)
	s.entries[d] = st
	return st, nil
}

// Hold records that owner (for example a mounted layer) uses the entries ds.
// Held entries are kept until Drop, unless the size bound forces eviction.
// Digests need not have entries yet. Holds live in memory only: owners hold
// again after a restart.
func (s *Store) Hold(owner string, ds []digest.Digest) error {
	for _, d := range ds {
		if err := validateDigest(d); err != nil {
			return err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	held, ok := s.owners[owner]
	if !ok {
		held = make(map[digest.Digest]struct{}, len(ds))
		s.owners[owner] = held
	}
	for _, d := range ds {
		if _, dup := held[d]; !dup {
			held[d] = struct{}{}
			s.holders[d]++
		}
	}
	return nil
}

// Drop releases everything owner holds and deletes entries that no owner
// holds any more and that are not open.
func (s *Store) Drop(owner string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	held := s.owners[owner]
	delete(s.owners, owner)
	var errs []error
	for d := range held {
		if s.holders[d]--; s.holders[d] > 0 {
			continue
		}
		delete(s.holders, d)
		if st, ok := s.entries[d]; ok && st.refs == 0 {
			errs = append(errs, s.removeLocked(st))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cache: drop %s: %w", owner, err)
	}
	return nil
}

// Stats reports the store's current size and counters.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	entries, bytes := len(s.entries), s.bytes
	s.mu.Unlock()
	return Stats{
		Entries:   entries,
		Bytes:     bytes,
		Hits:      s.hits.Load(),
		Misses:    s.misses.Load(),
		Evictions: s.evictions.Load(),
	}
}

// Close flushes state and closes the store. Entries still open are closed
// with it; their handles fail afterwards.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var errs []error
	for _, st := range s.entries {
		if st.refs > 0 {
			errs = append(errs, st.closeFiles())
		}
	}
	errs = append(errs, markClean(s.dir, s.lock), s.lock.Close())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cache: close: %w", err)
	}
	return nil
}

// Stats are cache counters, ready for export as metrics.
type Stats struct {
	Entries   int
	Bytes     int64 // bytes of present ranges on disk
	Hits      int64 // ReadAt calls served from present ranges
	Misses    int64 // Has calls that found a range missing
	Evictions int64
}

// account adds bytes an entry's WriteAt made present and enforces the bound.
func (s *Store) account(st *entryState, added int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st.bytes += added
	s.bytes += added
	s.evictLocked()
}

// release drops one handle of st; the last one closes its files.
func (s *Store) release(st *entryState) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	st.refs--
	if st.refs > 0 || s.closed {
		return nil
	}
	s.lru.MoveToFront(st.elem)
	err := st.closeFiles()
	// Writes while every candidate was open may have left the store over
	// its bound; this entry may now go.
	s.evictLocked()
	return err
}

// evictLocked removes entries that are not open, least recently used first
// and unheld ones before held ones, until the store is within its bound. If
// every entry is open the store stays over the bound until some close.
func (s *Store) evictLocked() {
	for _, evictHeld := range []bool{false, true} {
		for el := s.lru.Back(); el != nil && s.bytes > s.opts.maxBytes; {
			st := el.Value.(*entryState)
			el = el.Prev()
			if st.refs > 0 || (!evictHeld && s.holders[st.digest] > 0) {
				continue
			}
			if err := s.removeLocked(st); err != nil {
				s.opts.logger.Warn("cache: evict entry", "digest", st.digest, "error", err)
			}
			s.evictions.Add(1)
		}
	}
}

// removeLocked forgets a closed entry and deletes its files.
func (s *Store) removeLocked(st *entryState) error {
	delete(s.entries, st.digest)
	s.lru.Remove(st.elem)
	s.bytes -= st.bytes
	return st.remove()
}

// validateDigest rejects digests that are malformed or of an algorithm we do
// not store: digests come from untrusted TOCs and become file names.
//
// A well-formed digest is accepted without go-digest's regular expression:
// a layer's Mount holds every content digest of its TOC (Hold), tens of
// thousands for a big layer, and the expression took two thirds of that.
// Anything else goes through go-digest, for its error.
func validateDigest(d digest.Digest) error {
	if wellFormed(d) {
		return nil
	}
	if err := d.Validate(); err != nil {
		return fmt.Errorf("cache: digest %q: %w: %w", d, errdefs.ErrInvalidArgument, err)
	}
	if a := d.Algorithm(); a != digest.SHA256 && a != digest.SHA512 {
		return fmt.Errorf("cache: digest %q: algorithm %s not supported: %w", d, a, errdefs.ErrInvalidArgument)
	}
	return nil
}

// wellFormed reports whether d is a sha256 or sha512 digest whose encoded
// part is of the algorithm's length in lower-case hex: exactly the digests
// of those algorithms that go-digest's Validate accepts.
func wellFormed(d digest.Digest) bool {
	alg, enc, _ := strings.Cut(string(d), ":")
	var n int
	switch digest.Algorithm(alg) {
	case digest.SHA256:
		n = 64
	case digest.SHA512:
		n = 128
	default:
		return false
	}
	if len(enc) != n {
		return false
	}
	// A table lookup per character, not two range comparisons: a digest's
	// digits are random, so a branch on their range is mispredicted about
	// every other time.
	var bad byte
	for i := 0; i < len(enc); i++ {
		bad |= notLowerHex[enc[i]]
	}
	return bad == 0
}

// notLowerHex is 1 for every byte but the digits of lower-case hex.
var notLowerHex = func() (t [256]byte) {
	for i := range t {
		t[i] = 1
	}
	for _, c := range []byte("0123456789abcdef") {
		t[c] = 0
	}
	return t
}()
