package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/semaphore"
)

// errClosed is returned by reads of a closed stream.
var errClosed = errors.New("read of a closed remote blob stream")

// blob is a Blob at the host that resolved it. Fetches stick to that host.
type blob struct {
	r            *Resolver
	client       *http.Client
	host         string              // host:port of the registry (or mirror) that resolved it
	slots        *semaphore.Weighted // of the blob's host
	url          string
	digest       digest.Digest
	size         int64
	where        string // "blob D of REPO at HOST", for errors
	stats        blobCounters
	rangeIgnored sync.Once // logs once that the host ignores Range
	// tail is the blob's last bytes from Resolve's suffix GET, until
	// TakeTail. It is set before the blob is handed out, and never changed
	// after: only dropped.
	tail atomic.Pointer[[]byte]
}

func (b *blob) Digest() digest.Digest { return b.digest }
func (b *blob) String() string        { return b.where }
func (b *blob) Size() int64           { return b.size }
func (b *blob) Stats() Stats          { return b.stats.own.snapshot() }

// TakeTail hands the kept tail over once; Fetch no longer serves from it.
func (b *blob) TakeTail() []byte {
	if p := b.tail.Swap(nil); p != nil {
		return *p
	}
	return nil
}

// Fetch sends the first Range request before returning, so that a missing
// blob or a refused request fails here rather than at the first Read. The
// stream is for one goroutine; Close it to free its concurrency slot.
//
// While b keeps its tail, a range inside it costs no request, and a range
// reaching into it is fetched only up to the tail's start (one request no
// larger than needed) and joined with the tail's bytes.
func (b *blob) Fetch(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	if off < 0 || n < 0 || off > b.size || n > b.size-off {
		return nil, fmt.Errorf("fetching %d bytes at %d of %s (size %d): %w", n, off, b.where, b.size, errdefs.ErrInvalidArgument)
	}
	if p := b.tail.Load(); p != nil && n > 0 {
		tail := *p
		at := b.size - int64(len(tail)) // where the tail starts
		if end := off + n; end > at {
			kept := &tailStream{tail: bytes.NewReader(tail[max(off-at, 0) : end-at])}
			if off < at {
				s, err := b.fetch(ctx, off, at-off)
				if err != nil {
					return nil, err
				}
				kept.head = s
			}
			b.stats.tailHit()
			return kept, nil
		}
	}
	return b.fetch(ctx, off, n)
}

// fetch starts a stream of [off, off+n) from the registry.
func (b *blob) fetch(ctx context.Context, off, n int64) (*stream, error) {
	s := &stream{b: b, ctx: ctx, off: off, left: n, budget: b.r.opts.maxRetries}
	if n == 0 {
		return s, nil
	}
	if err := s.open(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// stream delivers bytes [off, off+left) of a blob, reissuing a Range request
// for what is left whenever an attempt breaks.
type stream struct {
	b         *blob
	ctx       context.Context
	off, left int64 // the next byte to deliver, and how many are still due
	budget    int   // retries left; renewed whenever an attempt delivers bytes
	failures  int   // consecutive failed attempts, for the backoff
	cur       *attempt
	lastErr   error // why the previous attempt ended
	err       error // sticky: the stream failed or was closed
}

func (s *stream) Read(p []byte) (int, error) {
	for {
		if s.err != nil {
			return 0, s.err
		}
		if s.left == 0 {
			return 0, io.EOF
		}
		if s.cur == nil {
			if err := s.open(); err != nil {
				return 0, err
			}
		}
		n, err := s.cur.read(p[:min(int64(len(p)), s.left)])
		s.progress(n)
		if err != nil || s.left == 0 {
			s.endAttempt(err)
		}
		if n > 0 || len(p) == 0 {
			return n, nil
		}
	}
}

func (s *stream) progress(n int) {
	if n > 0 {
		s.off += int64(n)
		s.left -= int64(n)
		s.budget, s.failures = s.b.r.opts.maxRetries, 0
	}
}

// endAttempt closes the current attempt; err (nil, or io.EOF once the
// response is used up) is why, and decides whether the next one may follow.
func (s *stream) endAttempt(err error) {
	s.cur.close()
	s.cur = nil
	if errors.Is(err, io.EOF) && s.left > 0 {
		err = fmt.Errorf("%w: response ended before the range did", errdefs.ErrUnavailable)
	}
	if err != nil && !errors.Is(err, io.EOF) {
		s.lastErr = err
	}
}

// open starts an attempt at what is left, after backing off if the previous
// one failed. It gives up on a permanent error or when the retry budget is
// spent; the stream then stays failed.
func (s *stream) open() error {
	for {
		if s.lastErr != nil {
			if !retryable(s.lastErr) || s.budget == 0 {
				return s.fail(s.lastErr)
			}
			s.budget--
			s.failures++
			s.b.stats.retry()
			s.b.r.opts.logger.DebugContext(s.ctx, "retrying range request", "blob", s.b.where, "offset", s.off, "error", s.lastErr)
			if err := sleep(s.ctx, s.b.r.opts.backoff(s.failures)); err != nil {
				return s.fail(err)
			}
		}
		a, err := s.b.send(s.ctx, s.off, s.left)
		if err == nil {
			s.cur, s.lastErr = a, nil
			return nil
		}
		s.lastErr = err
	}
}

func (s *stream) fail(err error) error {
	s.err = fmt.Errorf("fetching bytes %d-%d of %s (%d retries): %w", s.off, s.off+s.left-1, s.b.where, s.b.r.opts.maxRetries-s.budget, err)
	return s.err
}

// Close ends the stream and frees its concurrency slot.
func (s *stream) Close() error {
	if s.cur != nil {
		s.cur.close()
		s.cur = nil
	}
	if s.err == nil {
		s.err = errClosed
	}
	return nil
}

// tailStream serves a range from the kept tail, after the stream of its
// part before the tail, if any.
type tailStream struct {
	head   *stream // nil when the range lies inside the tail
	tail   *bytes.Reader
	closed bool
}

func (t *tailStream) Read(p []byte) (int, error) {
	if t.closed {
		return 0, errClosed
	}
	if t.head != nil {
		n, err := t.head.Read(p)
		if err != io.EOF {
			return n, err
		}
		t.head.Close()
		t.head = nil
		if n > 0 {
			return n, nil
		}
	}
	return t.tail.Read(p)
}

func (t *tailStream) Close() error {
	if t.head != nil {
		t.head.Close()
		t.head = nil
	}
	t.closed = true
	return nil
}
