package layer

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"syscall"

	"github.com/containerd/errdefs"
	"github.com/containerd/stargz-snapshotter/estargz/zstdchunked"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"

	"github.com/lazysnap/lazysnap/fs/index"
)

// StreamAll streams the whole blob once, in blob order, at background
// priority (each request admitted by the scheduler, so reads go first), and
// returns the digest of what it decompresses to: the layer's diff_id if the
// blob is what its manifest says. The compressed bytes are checked against
// the blob's own digest as they pass, so a registry (or anything between)
// that serves other bytes is told apart from an image that lies about its
// diff_id: the first fails with an error wrapping errdefs.ErrUnavailable
// and proves nothing about the layer.
//
// The same stream fills the cache: every chunk the cache lacks is taken from
// the decompressed tar, checked against its chunk digest and stored, so
// StreamAll is also the layer's background fetch. Chunks the tar does not
// yield (a layer whose tar and TOC disagree) are left for FetchAll.
//
// Bytes that fetches of the layer received before the stream came by are
// taken from the layer's spool (WithSpoolDir) rather than fetched again,
// and hashed the same. The spool is dropped when StreamAll returns.
func (l *Layer) StreamAll(ctx context.Context) (digest.Digest, error) {
	defer l.spool.close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(l.ctx, cancel)
	defer stop()

	spooledBefore := l.stats.streamSpooled.Load()
	diffID, err := l.streamOnce(ctx)
	if errors.Is(err, errBlobDigest) && l.stats.streamSpooled.Load() > spooledBefore {
		// Spooled bytes no read checked (a read-ahead tail's tar headers
		// or gzip trailers, say) may be what was wrong: once more, all
		// from the registry.
		l.opts.logger.Warn("layer stream did not match its digest with spooled bytes; streaming again without them",
			"layer", l.Digest(), "error", err)
		l.spool.close()
		diffID, err = l.streamOnce(ctx)
	}
	return diffID, err
}

// errBlobDigest marks a stream whose compressed bytes did not hash to the
// layer's digest.
var errBlobDigest = errors.New("the registry served a blob of another digest")

// streamOnce streams the blob once (see StreamAll).
func (l *Layer) streamOnce(ctx context.Context) (digest.Digest, error) {
	pr, pw := io.Pipe()
	type result struct {
		diffID digest.Digest
		err    error
	}
	done := make(chan result, 1)
	go func() {
		d, err := l.consumeStream(pr)
		if err != nil {
			// The blob's own digest still decides whether the registry or
			// the image is at fault: take the rest of the stream.
			io.Copy(io.Discard, pr)
		}
		done <- result{d, err}
	}()
	blobSum := sha256.New()
	perr := l.produceStream(ctx, io.MultiWriter(pw, blobSum))
	pw.CloseWithError(perr)
	res := <-done
	if perr != nil {
		return "", fmt.Errorf("streaming layer %s: %w", l.Digest(), perr)
	}
	if got := digest.NewDigest(digest.SHA256, blobSum); got != l.Digest() {
		return "", fmt.Errorf("layer %s: %w: %s: %w", l.Digest(), errBlobDigest, got, errdefs.ErrUnavailable)
	}
	if res.err != nil {
		return "", fmt.Errorf("layer %s does not decompress: %w: %w", l.Digest(), res.err, errdefs.ErrDataLoss)
	}
	return res.diffID, nil
}

// produceStream writes the blob's bytes to w in order: those in the spool
// from it, the others with one background request at a time.
func (l *Layer) produceStream(ctx context.Context, w io.Writer) error {
	size, step := l.toc.blob.Size(), l.opts.sched.requestBytes()
	var buf []byte
	for pos := int64(0); pos < size; {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, spooled := l.spool.next(pos, min(pos+step, size), l.opts.spoolMinPiece)
		if spooled {
			buf = grow(buf, n)
			ok, err := l.streamSpooled(ctx, w, buf, pos)
			if err != nil {
				return err
			}
			if !ok {
				continue // fetched instead
			}
		} else if err := l.streamRange(ctx, w, pos, n); err != nil {
			return err
		}
		pos += n
		l.spool.advance(pos)
	}
	return nil
}

// streamSpooled writes len(buf) bytes at off from the spool to w, as
// background work. It reports false, having written nothing, when the spool
// cannot be read: the spool is dropped, and the stream fetches the rest.
func (l *Layer) streamSpooled(ctx context.Context, w io.Writer, buf []byte, off int64) (bool, error) {
	release, err := l.opts.sched.admitLocal(ctx)
	if err != nil {
		return false, err
	}
	defer release()
	if err := l.spool.readAt(buf, off); err != nil {
		l.opts.logger.Debug("dropping the spool", "layer", l.Digest(), "error", err)
		l.spool.close()
		return false, nil
	}
	if _, err := w.Write(buf); err != nil {
		return false, err
	}
	l.stats.streamSpooled.Add(int64(len(buf)))
	return true, nil
}

func (l *Layer) streamRange(ctx context.Context, w io.Writer, off, n int64) error {
	release, err := l.opts.sched.admitBackground(ctx, n)
	if err != nil {
		return err
	}
	defer release()
	l.stats.backgroundRequests.Add(1)
	l.stats.requests.Add(1)
	rc, err := l.toc.blob.Fetch(ctx, off, n)
	if err != nil {
		return fmt.Errorf("fetching [%d, %d): %w", off, off+n, err)
	}
	defer rc.Close()
	got, err := io.Copy(w, io.LimitReader(rc, n))
	l.stats.bytesFetched.Add(got)
	if err != nil {
		return fmt.Errorf("reading [%d, %d): %w", off, off+n, err)
	}
	if got != n {
		return fmt.Errorf("reading [%d, %d): short body of %d bytes: %w", off, off+n, got, io.ErrUnexpectedEOF)
	}
	return nil
}

// consumeStream decompresses the blob, hashes the result and stores the
// chunks the cache lacks. It reads r to its end unless decompression fails.
func (l *Layer) consumeStream(r io.Reader) (digest.Digest, error) {
	zr, closeZ, err := l.streamReader(r)
	if err != nil {
		return "", err
	}
	defer closeZ()
	h := sha256.New()
	tee := io.TeeReader(zr, h)
	l.storeFromTar(tee)
	// Whatever the tar parser left (its end blocks, or everything after an
	// entry it could not parse) is part of the diff_id too.
	if _, err := io.Copy(io.Discard, tee); err != nil {
		return "", err
	}
	return digest.NewDigest(digest.SHA256, h), nil
}

// streamReader decompresses a whole blob of the layer's format: gzip
// members one after another (eStargz), or zstd frames, whose skippable
// frames (the zstd:chunked TOC and footer) are not part of the tar.
func (l *Layer) streamReader(r io.Reader) (io.Reader, func(), error) {
	if _, ok := l.toc.decompressor.(*zstdchunked.Decompressor); ok {
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(zstdMaxWindow))
		if err != nil {
			return nil, nil, err
		}
		return zr, zr.Close, nil
	}
	if l.wholeFrames() {
		return l.memberReader(r, l.memberBounds()), func() {}, nil
	}
	zr, err := gzip.NewReader(r)
	if err != nil {
		return nil, nil, err
	}
	return zr, func() { zr.Close() }, nil
}

// storeFromTar reads the layer tar and stores, for every regular file the
// index knows under that name and size, the chunks the cache lacks, each
// only if it matches its chunk digest. It stops at the first entry it
// cannot parse; what it skips stays missing.
func (l *Layer) storeFromTar(r io.Reader) {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err != nil {
			return
		}
		if h.Typeflag != tar.TypeReg || h.Size == 0 {
			continue
		}
		id, ok := l.lookupPath(h.Name)
		if !ok || l.idx.Mode(id)&syscall.S_IFMT != syscall.S_IFREG || l.idx.Attr(id).Size != h.Size {
			continue
		}
		if err := l.storeFile(tr, id); err != nil {
			l.opts.logger.Warn("background stream: file not stored", "layer", l.Digest(), "file", h.Name, "error", err)
		}
	}
}

// storeFile stores the missing chunks of regular file id from r, which
// holds its content from the start.
func (l *Layer) storeFile(r io.Reader, id index.ID) error {
	f, err := l.OpenFile(id)
	if err != nil {
		return err
	}
	defer f.Close()
	var buf []byte
	for i, c := range f.chunks {
		if f.entry.Has(c.FileOffset, c.Size) {
			l.present.mark(id, i, c.Size)
			if _, err := io.CopyN(io.Discard, r, c.Size); err != nil {
				return err
			}
			continue
		}
		buf = grow(buf, c.Size)
		if _, err := io.ReadFull(r, buf); err != nil {
			return err
		}
		if sha256.Sum256(buf) != c.Digest {
			// An earlier entry of the same name (the index keeps the
			// last), or a tar that disagrees with its TOC: not stored.
			continue
		}
		if err := f.entry.WriteAt(buf, c.FileOffset); err != nil {
			return err
		}
		l.present.mark(id, i, c.Size)
	}
	return nil
}

func grow(b []byte, n int64) []byte {
	if int64(cap(b)) < n {
		return make([]byte, n)
	}
	return b[:n]
}

// lookupPath finds a tar entry's name in the index, cleaned as the index
// cleans TOC names.
func (l *Layer) lookupPath(name string) (index.ID, bool) {
	p := path.Clean(strings.TrimLeft(name, "/"))
	if p == "." || p == ".." || strings.HasPrefix(p, "../") {
		return 0, false
	}
	var id index.ID // the root
	for c := range strings.SplitSeq(p, "/") {
		next, ok := l.idx.Lookup(id, c)
		if !ok {
			return 0, false
		}
		id = next
	}
	return id, true
}

// ErrBadLayer marks a layer whose content is not what its image promises
// (see MarkBad). It wraps errdefs.ErrDataLoss; the FUSE layer answers it
// with EIO.
var ErrBadLayer = fmt.Errorf("layer content does not match its diff_id: %w", errdefs.ErrDataLoss)

// MarkBad refuses every later open and read of the layer's files with an
// error wrapping ErrBadLayer and why. Files already served through FUSE
// passthrough keep their open handles: the kernel reads those without
// asking.
func (l *Layer) MarkBad(why error) {
	err := fmt.Errorf("%w: %w", ErrBadLayer, why)
	l.bad.CompareAndSwap(nil, &err)
}

// Bad returns the error MarkBad recorded, or nil.
func (l *Layer) Bad() error {
	if p := l.bad.Load(); p != nil {
		return *p
	}
	return nil
}

// ChainID returns the containerd chain ID of a layer whose diff_id is
// diffID on top of the snapshot whose chain ID is parent ("" for none), as
// the OCI image spec defines it.
func ChainID(parent, diffID digest.Digest) digest.Digest {
	if parent == "" {
		return diffID
	}
	return digest.FromString(parent.String() + " " + diffID.String())
}
