package fs

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"

	"github.com/lazysnap/lazysnap/fs/layer"
	"github.com/lazysnap/lazysnap/fs/remote"
)

// A TOC tail is what reading a layer's TOC fetched from its blob (the
// footer and the TOC), kept per mountpoint while the layer is mounted, so
// that a process resuming the mount builds the layer without the registry:
// the registry may be what is down. The TOC read from it is checked against
// the TOC digest as always, so a stale or damaged file costs only the
// fallback to the registry.
type tocTail struct {
	Digest digest.Digest `json:"digest"` // the blob's
	Size   int64         `json:"size"`
	Ranges []tailRange   `json:"ranges"`
}

type tailRange struct {
	Off  int64  `json:"off"`
	Data []byte `json:"data"`
}

// tailPath is the file of mountpoint's tail.
func (f *FS) tailPath(mountpoint string) string {
	return filepath.Join(f.opts.tocTailDir, digest.FromString(mountpoint).Encoded())
}

// A tail's file is a JSON header on one line (tailHeader: the blob, and
// where each range lies in it and how long it is), then the ranges' bytes,
// one after another. The bytes are written as they are, not as base64 in
// the JSON: a big layer's TOC is megabytes, the file is written on the path
// of its Mount, and encoding it in a new process (a buffer growing, its
// pages faulted in) cost tens of milliseconds. An earlier version wrote the
// whole tail as one JSON object with the bytes in base64 (tocTail as
// encoding/json gives it, without a newline): loadTail still reads it, so
// that a mount resumed across an upgrade keeps its tail.
type tailHeader struct {
	Digest digest.Digest `json:"digest"`
	Size   int64         `json:"size"`
	Ranges []tailSpan    `json:"ranges"`
}

// tailSpan is where a range lies in the blob, and its length: Len in the
// current format, Data (base64) in the earlier one.
type tailSpan struct {
	Off  int64  `json:"off"`
	Len  int64  `json:"len"`
	Data []byte `json:"data,omitempty"`
}

// saveTail writes tail for mountpoint, replacing any earlier one whole.
func (f *FS) saveTail(mountpoint string, tail tocTail) error {
	if f.opts.tocTailDir == "" {
		return nil
	}
	if err := os.MkdirAll(f.opts.tocTailDir, 0o700); err != nil {
		return fmt.Errorf("saving the TOC of %s: %w", mountpoint, err)
	}
	tmp := f.tailPath(mountpoint) + ".tmp"
	if err := writeTail(tmp, tail); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("saving the TOC of %s: %w", mountpoint, err)
	}
	return os.Rename(tmp, f.tailPath(mountpoint))
}

// writeTail writes tail to a new file at path.
func writeTail(path string, tail tocTail) error {
	h := tailHeader{Digest: tail.Digest, Size: tail.Size, Ranges: make([]tailSpan, len(tail.Ranges))}
	bufs := make(net.Buffers, 0, 1+len(tail.Ranges))
	for i, r := range tail.Ranges {
		h.Ranges[i] = tailSpan{Off: r.Off, Len: int64(len(r.Data))}
		bufs = append(bufs, r.Data)
	}
	line, err := json.Marshal(h)
	if err != nil {
		return err
	}
	bufs = append(net.Buffers{append(line, '\n')}, bufs...)
	file, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = bufs.WriteTo(file)
	if cerr := file.Close(); err == nil {
		err = cerr
	}
	return err
}

func (f *FS) loadTail(mountpoint string) (tocTail, error) {
	if f.opts.tocTailDir == "" {
		return tocTail{}, os.ErrNotExist
	}
	b, err := os.ReadFile(f.tailPath(mountpoint))
	if err != nil {
		return tocTail{}, err
	}
	return parseTail(b)
}

// parseTail reads a tail's file, in either format.
func parseTail(b []byte) (tocTail, error) {
	line, data, current := bytes.Cut(b, []byte("\n"))
	var h tailHeader
	if err := json.Unmarshal(line, &h); err != nil {
		return tocTail{}, fmt.Errorf("a TOC tail's header: %w", err)
	}
	tail := tocTail{Digest: h.Digest, Size: h.Size, Ranges: make([]tailRange, len(h.Ranges))}
	for i, r := range h.Ranges {
		if !current {
			tail.Ranges[i] = tailRange{Off: r.Off, Data: r.Data}
			continue
		}
		if r.Len < 0 || r.Len > int64(len(data)) {
			return tocTail{}, fmt.Errorf("a TOC tail's range %d: %d bytes, %d left in the file", i, r.Len, len(data))
		}
		tail.Ranges[i] = tailRange{Off: r.Off, Data: data[:r.Len:r.Len]}
		data = data[r.Len:]
	}
	if len(data) > 0 {
		return tocTail{}, fmt.Errorf("a TOC tail: %d bytes after its ranges", len(data))
	}
	return tail, nil
}

func (f *FS) removeTail(mountpoint string) {
	if f.opts.tocTailDir != "" {
		os.Remove(f.tailPath(mountpoint))
	}
}

// recordingBlob keeps what is fetched through it until stopped: it wraps a
// blob while its TOC is read.
type recordingBlob struct {
	remote.Blob
	mu     sync.Mutex
	on     bool
	ranges []tailRange
}

func newRecordingBlob(b remote.Blob) *recordingBlob { return &recordingBlob{Blob: b, on: true} }

func (b *recordingBlob) Fetch(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	rc, err := b.Blob.Fetch(ctx, off, n)
	b.mu.Lock()
	on := b.on
	b.mu.Unlock()
	if err != nil || !on {
		return rc, err
	}
	data, err := io.ReadAll(io.LimitReader(rc, n))
	rc.Close()
	if err != nil {
		return nil, err
	}
	if int64(len(data)) == n {
		b.mu.Lock()
		b.ranges = append(b.ranges, tailRange{Off: off, Data: data})
		b.mu.Unlock()
	}
	return io.NopCloser(bytes.NewReader(data)), nil
}

// stop ends the recording and returns what was fetched.
func (b *recordingBlob) stop() tocTail {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.on = false
	tail := tocTail{Digest: b.Digest(), Size: b.Size(), Ranges: b.ranges}
	b.ranges = nil
	return tail
}

func (b *recordingBlob) String() string { return blobName(b.Blob) }

func blobName(b remote.Blob) string {
	if s, ok := b.(fmt.Stringer); ok {
		return s.String()
	}
	return "blob " + b.Digest().String()
}

// tailBlob serves the ranges of a tail, and resolves the blob in the
// registry the first time anything else is fetched.
type tailBlob struct {
	digest  digest.Digest
	size    int64
	resolve func(context.Context) (remote.Blob, error)

	mu     sync.Mutex
	ranges []tailRange // dropped once the TOC is read
	blob   remote.Blob
}

func (b *tailBlob) Digest() digest.Digest { return b.digest }
func (b *tailBlob) Size() int64           { return b.size }

func (b *tailBlob) Fetch(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	b.mu.Lock()
	for _, r := range b.ranges {
		if off >= r.Off && off+n <= r.Off+int64(len(r.Data)) {
			b.mu.Unlock()
			return io.NopCloser(bytes.NewReader(r.Data[off-r.Off : off-r.Off+n])), nil
		}
	}
	b.mu.Unlock()
	blob, err := b.resolved(ctx)
	if err != nil {
		return nil, err
	}
	return blob.Fetch(ctx, off, n)
}

func (b *tailBlob) resolved(ctx context.Context) (remote.Blob, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.blob != nil {
		return b.blob, nil
	}
	blob, err := b.resolve(ctx)
	if err != nil {
		return nil, err
	}
	if blob.Digest() != b.digest || blob.Size() != b.size {
		return nil, fmt.Errorf("blob %s of %d bytes resolved, the layer is %s of %d: %w",
			blob.Digest(), blob.Size(), b.digest, b.size, errdefs.ErrFailedPrecondition)
	}
	b.blob = blob
	return blob, nil
}

// dropRanges forgets the tail once the TOC is read.
func (b *tailBlob) dropRanges() {
	b.mu.Lock()
	b.ranges = nil
	b.mu.Unlock()
}

// TakeTail takes the tail (remote.Blob.TakeTail) of the blob resolved
// for a fetch the saved ranges could not serve, if any, so that reading
// the TOC drops it as it does for a blob resolved at once.
func (b *tailBlob) TakeTail() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.blob == nil {
		return nil
	}
	return b.blob.TakeTail()
}

func (b *tailBlob) Stats() remote.Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.blob == nil {
		return remote.Stats{}
	}
	return b.blob.Stats()
}

func (b *tailBlob) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.blob != nil {
		return blobName(b.blob)
	}
	return "blob " + b.digest.String() + " (not resolved yet)"
}

// layerTOC reads the TOC of the layer t for mountpoint. A layer resumed is
// read from its tail when there is one; a layer read from the registry
// leaves its tail for the next resume.
func (f *FS) layerTOC(ctx context.Context, mountpoint string, t target, resumed bool) (*layer.TOC, error) {
	if resumed {
		if tail, err := f.loadTail(mountpoint); err == nil && tail.Digest == t.digest {
			b := &tailBlob{digest: tail.Digest, size: tail.Size, ranges: tail.Ranges,
				resolve: func(ctx context.Context) (remote.Blob, error) { return f.resolve(ctx, t) }}
			toc, err := readTOC(ctx, b, t.tocDigest)
			b.dropRanges()
			if err == nil {
				return toc, nil
			}
			f.opts.logger.WarnContext(ctx, "the saved TOC did not do; reading it from the registry", "mountpoint", mountpoint, "error", err)
		}
	}
	toc, tail, ok := f.tocReadAhead(ctx, t)
	if !ok {
		blob, err := f.resolve(ctx, t)
		if err != nil {
			return nil, err
		}
		rec := newRecordingBlob(blob)
		toc, err = readTOC(ctx, rec, t.tocDigest)
		tail = rec.stop()
		if err != nil {
			return nil, err
		}
	}
	if err := f.saveTail(mountpoint, tail); err != nil {
		f.opts.logger.WarnContext(ctx, "a resume of this layer will need the registry", "mountpoint", mountpoint, "error", err)
	}
	return toc, nil
}

// tocReadAhead returns t's TOC if it was read ahead (tocsAhead) and is
// the one t names.
func (f *FS) tocReadAhead(ctx context.Context, t target) (*layer.TOC, tocTail, bool) {
	if f.ahead == nil {
		return nil, tocTail{}, false
	}
	return f.ahead.take(ctx, t)
}

// readTOCAhead resolves t's blob and reads its TOC without its digest
// (layer.ReadTOCAhead), keeping what it fetched for the layer's tail file.
func (f *FS) readTOCAhead(ctx context.Context, t target) (*layer.Unverified, tocTail, error) {
	blob, err := f.resolve(ctx, t)
	if err != nil {
		return nil, tocTail{}, err
	}
	rec := newRecordingBlob(blob)
	toc, err := layer.ReadTOCAhead(ctx, markedBlob{rec})
	tail := rec.stop()
	if err != nil {
		f.opts.logger.DebugContext(ctx, "reading a TOC ahead failed; its Mount reads it", "layer", t.digest, "error", err)
	}
	return toc, tail, err
}

func (f *FS) resolve(ctx context.Context, t target) (remote.Blob, error) {
	blob, err := f.resolver.Resolve(ctx, t.ref, t.digest)
	if err != nil {
		return nil, fmt.Errorf("resolving layer %s of %s: %w", t.digest, t.ref, err)
	}
	return blob, nil
}
