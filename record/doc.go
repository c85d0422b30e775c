// Package record runs an image's workload in a sandbox built from the image
// itself and records the order in which it opens the image's files, and the
// parts of the large ones it reads, so that a converter can place those
// files first (before the eStargz prefetch landmark) and a lazy snapshotter
// can fetch them all in one request.
//
// # Sandbox
//
// The image's layers are applied, in order and with whiteouts, to a
// temporary directory. That directory is the lower layer of an overlay whose
// upper layer is a tmpfs, so the workload can write (to /tmp and elsewhere)
// without changing the extracted image. The workload runs there under the
// real runc, with new pid, mount, ipc, uts and network namespaces (the network
// namespace holds only lo unless networking is asked for), the image's
// entrypoint and command (or an override), environment, working directory
// and user, and no terminal.
//
// # Recording
//
// Opens are recorded with fanotify, marking the overlay's superblock
// (FAN_MARK_FILESYSTEM): that superblock belongs to this one run, so every
// event is the workload's, in the order the kernel queued them, whichever
// mount namespace the workload sees it through. FAN_OPEN and FAN_OPEN_EXEC
// catch files read, executed and mmapped (shared libraries are opened before
// they are mapped). Only regular files present in the image are kept, in
// order of first open, each once; files the workload created, directories
// and pseudo files are dropped.
//
// # Ranges of large files
//
// fanotify says which files are opened, not which bytes are read, so the
// parts read of the files of at least prefetchlist.RangedMinSize are learned
// from the page cache (WithReadRanges, on by default). Just before the
// workload starts, each such file of the extracted image is written back
// (sync_file_range) and its pages dropped (FADV_DONTNEED), and mincore
// checks that none is left. overlayfs serves reads and mmaps of a file it
// has not copied up from the lower file's own page cache, so after the stop
// the lower file's resident pages are what the workload read (until it was
// killed, moments after the stop), plus the kernel's read-ahead around it:
// ranges are page aligned and wider than the reads (by up to the work dir
// device's read_ahead_kb, for reads and mmap read-around alike), which only
// prefetches a little more. A file read whole gets one range of all of it. No ranges,
// so the file is taken whole, for a file whose pages could not be dropped (a
// work dir on tmpfs, where the pages are the file), one the workload wrote
// (copy-up reads it all), and one of which no page is resident; ranges are
// never guessed. Pages read and then evicted under memory pressure before
// the stop are missed: those parts are fetched on demand later.
//
// # The list format
//
// A trace is written as a prefetch list (package prefetchlist): one absolute
// path per line, in access order, '#' comments, and after a large file its
// "#@ranges" directive. This is the format `lazyconv convert --prioritize`
// reads and `lazysnap trace export` writes. A path that cannot be written
// in it (one holding a newline, or ending in white space) is never
// recorded.
package record
