package layer

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/lazysnap/lazysnap/fs/remote"
)

// stallingBlob serves its first Fetch normally up to stallAt bytes, then
// holds the body until the fetch's context ends, as a trickling registry
// does; later fetches are served whole.
type stallingBlob struct {
	data    []byte
	stallAt int64
}

func (b *stallingBlob) Digest() digest.Digest { return digest.FromBytes(b.data) }
func (b *stallingBlob) Size() int64           { return int64(len(b.data)) }
func (b *stallingBlob) Stats() remote.Stats   { return remote.Stats{} }
func (b *stallingBlob) Fetch(ctx context.Context, off, n int64) (io.ReadCloser, error) {
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
