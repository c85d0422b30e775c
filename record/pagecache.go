package record

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unsafe"

	"github.com/lazysnap/lazysnap/prefetchlist"
	"golang.org/x/sys/unix"
)

// pageRecorder learns which parts of the extracted image's large files a
// workload reads, from their page cache. overlayfs serves reads and mmaps of
// a file it has not copied up from the lower file's own pages, so once
// those pages are dropped before the run, the pages resident after it are
// the ones the workload (or the kernel's read-ahead for it) read.
type pageRecorder struct {
	lower string
	// files are the image paths of the lower's files of at least
	// prefetchlist.RangedMinSize whose pages were seen to be gone before
	// the run, with their sizes. Other files get no ranges.
	files map[string]int64
}

// errStillCached: the file's pages could not be dropped (tmpfs, whose
// pages are the file, or pages pinned by some other user).
var errStillCached = errors.New("pages still in the page cache after dropping them")

// dropLargeFiles drops from the page cache the pages of every regular file
// of lower of at least prefetchlist.RangedMinSize, and returns a recorder
// of those whose pages are gone. A file that fails is left out, and so is
// listed whole, never with guessed ranges.
func dropLargeFiles(lower string, logger *slog.Logger) *pageRecorder {
	start := time.Now()
	pr := &pageRecorder{lower: lower, files: make(map[string]int64)}
	failed := 0
	var firstErr error
	_ = filepath.WalkDir(lower, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil // an unreadable directory only costs its files' ranges
		}
		fi, err := d.Info()
		if err != nil || fi.Size() < prefetchlist.RangedMinSize {
			return nil
		}
		if err := dropPages(p, fi.Size()); err != nil {
			failed++
			if firstErr == nil {
				firstErr = fmt.Errorf("%s: %w", p, err)
			}
			return nil
		}
		pr.files["/"+strings.TrimPrefix(p, lower+"/")] = fi.Size()
		return nil
	})
	if failed > 0 {
		logger.Warn("cannot drop large files' pages from the page cache (is the work dir on tmpfs?); they will be listed whole, without ranges",
			"files", failed, "error", firstErr)
	}
	logger.Info("dropped large files' pages from the page cache, to learn which parts are read", "files", len(pr.files), "failed", failed, "duration", time.Since(start))
	return pr
}

// dropPages writes back and drops the cached pages of the file at p, of
// size bytes, and checks that none is left.
func dropPages(p string, size int64) error {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	defer unix.Close(fd)
	// Just extracted, the pages are dirty, and FADV_DONTNEED drops only
	// clean ones. sync_file_range writes back this file alone, without
	// fdatasync's journal commit per file; fdatasync is the fallback where
	// it is not supported.
	const wb = unix.SYNC_FILE_RANGE_WAIT_BEFORE | unix.SYNC_FILE_RANGE_WRITE | unix.SYNC_FILE_RANGE_WAIT_AFTER
	if err := unix.SyncFileRange(fd, 0, 0, wb); err != nil {
		if err := unix.Fdatasync(fd); err != nil {
			return fmt.Errorf("writing back: %w", err)
		}
	}
	if err := unix.Fadvise(fd, 0, 0, unix.FADV_DONTNEED); err != nil {
		return fmt.Errorf("fadvise: %w", err)
	}
	vec, err := residency(fd, size)
	if err != nil {
		return err
	}
	for _, v := range vec {
		if v&1 != 0 {
			return errStillCached
		}
	}
	return nil
}

// residency returns, for each page of the open file fd of size bytes, a
// byte whose low bit says whether it is in the page cache. Mapping the
// file faults nothing in.
func residency(fd int, size int64) ([]byte, error) {
	if size <= 0 {
		return nil, nil
	}
	data, err := unix.Mmap(fd, 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap: %w", err)
	}
	defer unix.Munmap(data)
	ps := int64(os.Getpagesize())
	vec := make([]byte, (size+ps-1)/ps)
	if err := mincore(data, vec); err != nil {
		return nil, fmt.Errorf("mincore: %w", err)
	}
	return vec, nil
}

// mincore is mincore(2), which golang.org/x/sys/unix has only for the BSDs.
func mincore(b, vec []byte) error {
	_, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)), uintptr(unsafe.Pointer(unsafe.SliceData(vec))))
	if errno != 0 {
		return errno
	}
	return nil
}

// ranges returns the byte ranges read of the paths the recorder tracks,
// keyed by path: their resident pages. A file the workload changed (copied
// up into upper) is left out, as is one with no page resident (the list
// format cannot say "nothing", so it is listed whole), and one that fails.
func (pr *pageRecorder) ranges(paths []string, upper string, logger *slog.Logger) map[string][]prefetchlist.Range {
	out := make(map[string][]prefetchlist.Range)
	for _, p := range paths {
		size, ok := pr.files[p]
		if !ok {
			continue
		}
		// Copy-up reads the whole lower file, and the workload reads the
		// upper copy after it: the lower's pages no longer say what it read.
		if _, err := os.Lstat(filepath.Join(upper, p)); err == nil {
			continue
		}
		rs, err := pr.fileRanges(p, size)
		if err != nil {
			logger.Warn("cannot read a large file's resident pages; it will be listed whole", "path", p, "error", err)
			continue
		}
		if len(rs) > 0 {
			out[p] = rs
		}
	}
	return out
}

func (pr *pageRecorder) fileRanges(p string, size int64) ([]prefetchlist.Range, error) {
	fd, err := unix.Open(filepath.Join(pr.lower, p), unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	defer unix.Close(fd)
	vec, err := residency(fd, size)
	if err != nil {
		return nil, err
	}
	return residentRanges(vec, int64(os.Getpagesize()), size), nil
}

// residentRanges turns a mincore vector of a file of size bytes into the
// byte ranges of its resident pages, runs of pages joined, the last page
// clipped to size, normalized (prefetchlist.Normalize).
func residentRanges(vec []byte, pageSize, size int64) []prefetchlist.Range {
	var rs []prefetchlist.Range
	for i := 0; i < len(vec); {
		if vec[i]&1 == 0 {
			i++
			continue
		}
		j := i + 1
		for j < len(vec) && vec[j]&1 != 0 {
			j++
		}
		start, end := int64(i)*pageSize, min(int64(j)*pageSize, size)
		if start < end {
			rs = append(rs, prefetchlist.Range{Start: start, End: end})
		}
		i = j
	}
	return prefetchlist.Normalize(rs)
}
