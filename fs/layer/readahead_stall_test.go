package layer

import (
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/lazysnap/lazysnap/fs/remote"
)

// stallingBlob serves each Fetch normally up to stallAt bytes, then holds
// the body until the fetch's context ends, as a trickling registry does. It
// keeps the context and length of every Fetch.
type stallingBlob struct {
	data    []byte
	stallAt int64

	mu      sync.Mutex
	ctxs    []context.Context
	lengths []int64
}

func (b *stallingBlob) Digest() digest.Digest { return digest.FromBytes(b.data) }
func (b *stallingBlob) Size() int64           { return int64(len(b.data)) }
func (b *stallingBlob) Stats() remote.Stats   { return remote.Stats{} }
func (b *stallingBlob) TakeTail() []byte      { return nil }
func (b *stallingBlob) Fetch(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	b.mu.Lock()
	b.ctxs, b.lengths = append(b.ctxs, ctx), append(b.lengths, n)
	b.mu.Unlock()
	body := b.data[off : off+n]
	return io.NopCloser(&stallReader{ctx: ctx, data: body, stallAt: b.stallAt}), nil
}

type stallReader struct {
	ctx     context.Context
	data    []byte
	pos     int64
	stallAt int64
}

func (r *stallReader) Read(p []byte) (int, error) {
	if r.pos >= r.stallAt {
		<-r.ctx.Done()
		return 0, r.ctx.Err()
	}
	n := copy(p[:min(int64(len(p)), r.stallAt-r.pos)], r.data[r.pos:])
	r.pos += int64(n)
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

// TestReadAheadStallMeetsDeadline: a read whose request (with a read-ahead
// tail) stalls fails at the read deadline.
func TestReadAheadStallMeetsDeadline(t *testing.T) {
	tl := smallFiles(t, 30)
	blob := &stallingBlob{data: tl.blob.data, stallAt: 10}
	tl.toc.blob = blob
	l := tl.open(t, WithReadAhead(1<<20), WithReadTimeout(300*time.Millisecond))
	done := make(chan error, 1)
	go func() {
		p := make([]byte, 500)
		_, err := l.ReadAt(t.Context(), tl.id(t, l, "f00"), p, 0)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("read of a stalled request succeeded")
		}
		t.Logf("read failed as it should: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("read with a stalled read-ahead request did not end at its deadline")
	}
}

// TestReadAheadStallFailsWithDeadline: a read whose request (with a
// read-ahead tail) stalls fails with its deadline, not as cancelled. fs/node
// answers a cancelled read with EINTR, which the reader retries at once:
// each retry was another read-ahead request cancelled at its deadline, and
// TestSlowRegistryNeitherHoldsReadsNorStarvesOthers hung so with
// read-ahead on.
func TestReadAheadStallFailsWithDeadline(t *testing.T) {
	tl := smallFiles(t, 30)
	blob := &stallingBlob{data: tl.blob.data, stallAt: 10}
	tl.toc.blob = blob
	l := tl.open(t, WithReadAhead(1<<20), WithReadTimeout(300*time.Millisecond))
	_, err := l.ReadAt(t.Context(), tl.id(t, l, "f00"), make([]byte, 500), 0)
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		t.Fatalf("read of a stalled request: %v, want DeadlineExceeded and not Canceled", err)
	}
	if n := blob.fetchLength(t, 0); n <= fileBytes(t, l, tl, "f00") {
		t.Fatalf("the read asked for %d bytes: no read-ahead tail to test", n)
	}
}

// TestReadAheadTailEndsAtReadDeadline: a read-ahead tail that stalls after
// its read's chunks arrived (the read succeeds) is cancelled at the read's
// deadline, so that it does not hold a request slot of the registry, or
// flights other reads wait for, for as long as the layer is mounted.
func TestReadAheadTailEndsAtReadDeadline(t *testing.T) {
	tl := smallFiles(t, 30)
	blob := &stallingBlob{data: tl.blob.data}
	tl.toc.blob = blob
	l := tl.open(t, WithReadAhead(1<<20), WithReadTimeout(300*time.Millisecond))
	blob.stallAt = fileBytes(t, l, tl, "f00")
	if err := tl.readAll(t, l, "f00"); err != nil {
		t.Fatalf("read whose own bytes arrived: %v", err)
	}
	if n := blob.fetchLength(t, 0); n <= blob.stallAt {
		t.Fatalf("the read asked for %d bytes: no read-ahead tail to test", n)
	}
	select {
	case <-blob.fetchContext(t, 0).Done():
	case <-time.After(10 * time.Second):
		t.Fatal("a stalled read-ahead tail went on long after its read's deadline")
	}
}

// fileBytes is how many compressed bytes of the blob file name's chunks
// span: what a read of the whole file asks for, without read-ahead.
func fileBytes(t *testing.T, l *Layer, tl *testLayer, name string) int64 {
	t.Helper()
	cs := l.Index().Chunks(tl.id(t, l, name))
	return cs[len(cs)-1].BlobEnd - cs[0].BlobOffset
}

func (b *stallingBlob) fetchLength(t *testing.T, i int) int64 {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if i >= len(b.lengths) {
		t.Fatalf("no fetch %d", i)
	}
	return b.lengths[i]
}

func (b *stallingBlob) fetchContext(t *testing.T, i int) context.Context {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if i >= len(b.ctxs) {
		t.Fatalf("no fetch %d", i)
	}
	return b.ctxs[i]
}
