package cache

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
)

// load rebuilds the store's index from its directory. It runs before the
// store is shared, so it takes no locks.
func (s *Store) load() error {
	files := filepath.Join(s.dir, "files")
	unclean, err := uncleanReboot(s.dir)
	if err != nil {
		return err
	}
	if unclean {
		s.opts.logger.Warn("cache: machine crashed while the cache was open; discarding it", "dir", s.dir)
		if err := os.RemoveAll(files); err != nil {
			return fmt.Errorf("discard cache: %w", err)
		}
	}
	if err := markRunning(s.dir); err != nil {
		return err
	}
	var loaded []loadedEntry
	for _, alg := range []digest.Algorithm{digest.SHA256, digest.SHA512} {
		les, err := s.loadAlgorithm(filepath.Join(files, string(alg)), alg)
		if err != nil {
			return err
		}
		loaded = append(loaded, les...)
	}
	// Oldest presence records (journal writes, or the data writes of
	// entries complete by their xattr) go to the back of the LRU list: the
	// best guess of last use a restart can make.
	slices.SortFunc(loaded, func(a, b loadedEntry) int { return b.modTime.Compare(a.modTime) })
	for _, le := range loaded {
		le.st.elem = s.lru.PushBack(le.st)
		s.entries[le.st.digest] = le.st
		s.bytes += le.st.bytes
	}
	// The bound may have shrunk since the last run.
	s.evictLocked()
	return nil
}

type loadedEntry struct {
	st      *entryState
	modTime time.Time
}

// loadAlgorithm loads the entries in one algorithm's directory and deletes
// what is not a usable entry: stray temporaries, journals without data,
// data without present bytes, names that are not digests.
func (s *Store) loadAlgorithm(dir string, alg digest.Algorithm) ([]loadedEntry, error) {
	des, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", dir, err)
	}
	var loaded []loadedEntry
	for _, de := range des {
		name := de.Name()
		if strings.HasSuffix(name, ".ranges") {
			if _, err := os.Lstat(filepath.Join(dir, strings.TrimSuffix(name, ".ranges"))); errors.Is(err, fs.ErrNotExist) {
				s.removeStray(filepath.Join(dir, name))
			}
			continue
		}
		d := digest.NewDigestFromEncoded(alg, name)
		if !de.Type().IsRegular() || validateDigest(d) != nil {
			s.removeStray(filepath.Join(dir, name))
			continue
		}
		le, ok, err := s.loadEntry(d)
		if err != nil {
			return nil, err
		}
		if ok {
			loaded = append(loaded, le)
		}
	}
	return loaded, nil
}

// loadEntry loads one entry, compacting its journal. ok is false if the
// entry had nothing present and was deleted.
func (s *Store) loadEntry(d digest.Digest) (le loadedEntry, ok bool, err error) {
	st := newEntryState(s.dir, d, 0)
	fi, err := os.Stat(st.dataPath())
	if err != nil {
		return le, false, fmt.Errorf("load entry %s: %w", d, err)
	}
	st.size = fi.Size()
	// The data file's mtime is its last write: the LRU age of an entry
	// without journal, whose presence was recorded right after that write.
	mod := fi.ModTime()
	present, compact, err := loadJournal(st.journalPath(), st.size)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// No journal file: the entry is present whole if one write made it
		// complete and recorded that as the data file's completeXattr, a
		// valid value whose one record is [0, size) of the file's current
		// size. Anything else (no xattr, a corrupt value, another span)
		// means nothing is present, and the entry is removed below. The
		// xattr is read only here, with no journal file: a journal, when it
		// exists, wins. What is loaded is present, not verified: the layer
		// above hashes it before first use, so a torn state costs a
		// refetch, never a wrong byte.
		present, compact = intervals{}, false
		if hasCompleteXattr(st.dataPath(), st.size) {
			present.add(0, st.size)
		}
	case err != nil:
		return le, false, fmt.Errorf("load entry %s: %w", d, err)
	default:
		if jfi, err := os.Stat(st.journalPath()); err == nil {
			mod = jfi.ModTime()
		}
	}
	if present.bytes == 0 {
		return le, false, st.remove()
	}
	if compact {
		s.opts.logger.Debug("cache: compacting presence journal", "digest", d)
		if err := writeJournal(st.journalPath(), &present); err != nil {
			return le, false, fmt.Errorf("load entry %s: %w", d, err)
		}
	}
	st.present, st.bytes = present, present.bytes
	return loadedEntry{st: st, modTime: mod}, true, nil
}

func (s *Store) removeStray(path string) {
	if err := os.RemoveAll(path); err != nil {
		s.opts.logger.Warn("cache: remove stray file", "path", path, "error", err)
	}
}
