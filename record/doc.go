// Package record runs an image's workload in a sandbox built from the image
// itself and records the order in which it opens the image's files, so that
// a converter can place those files first (before the eStargz prefetch
// landmark) and a lazy snapshotter can fetch them all in one request.
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
// # The list format
//
// A trace is written as a prefetch list (package prefetchlist): one absolute
// path per line, in access order, '#' comments. This is the format `lazyconv
// convert --prioritize` reads and `lazysnap trace export` writes. A path that
// cannot be written in it (one holding a newline, or ending in white space)
// is never recorded.
package record
