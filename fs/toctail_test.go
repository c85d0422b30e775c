package fs

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/opencontainers/go-digest"

	"github.com/lazysnap/lazysnap/fs/remote"
)

// memBlob is a blob in memory that counts its fetches.
type memBlob struct {
	data    []byte
	fetches int
}

func (b *memBlob) Digest() digest.Digest { return digest.FromBytes(b.data) }
func (b *memBlob) Size() int64           { return int64(len(b.data)) }
func (b *memBlob) Stats() remote.Stats   { return remote.Stats{} }
func (b *memBlob) TakeTail() []byte      { return nil }
func (b *memBlob) Fetch(_ context.Context, off, n int64) (io.ReadCloser, error) {
	b.fetches++
	return io.NopCloser(bytes.NewReader(b.data[off : off+n])), nil
}

// TestTOCTailNeedsNoRegistry: what reading a TOC fetched is enough to read
// it again with no registry at all, and a fetch beyond it resolves the blob.
func TestTOCTailNeedsNoRegistry(t *testing.T) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "a", Typeflag: tar.TypeReg, Mode: 0o644, Size: 5})
	tw.Write([]byte("hello"))
	tw.Close()
	eb, err := estargz.Build(io.NewSectionReader(bytes.NewReader(buf.Bytes()), 0, int64(buf.Len())))
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(eb)
	eb.Close()
	blob := &memBlob{data: data}

	f := &FS{opts: defaultOptions()}
	f.opts.tocTailDir = t.TempDir()
	rec := newRecordingBlob(blob)
	if _, err := readTOC(t.Context(), rec, eb.TOCDigest()); err != nil {
		t.Fatal(err)
	}
	if err := f.saveTail("/mnt/x", rec.stop()); err != nil {
		t.Fatal(err)
	}
	tail, err := f.loadTail("/mnt/x")
	if err != nil {
		t.Fatal(err)
	}
	noRegistry := errors.New("no registry")
	resolves := 0
	tb := &tailBlob{digest: tail.Digest, size: tail.Size, ranges: tail.Ranges,
		resolve: func(context.Context) (remote.Blob, error) { resolves++; return nil, noRegistry }}
	toc, err := readTOC(t.Context(), tb, eb.TOCDigest())
	if err != nil || toc.Digest != eb.TOCDigest() || resolves != 0 {
		t.Fatalf("TOC from the tail: %v (%d resolves)", err, resolves)
	}
	tb.dropRanges()
	if _, err := tb.Fetch(t.Context(), 0, 1); !errors.Is(err, noRegistry) || resolves != 1 {
		t.Fatalf("a fetch beyond the tail: %v (%d resolves), want the resolver's error", err, resolves)
	}
	tb.resolve = func(context.Context) (remote.Blob, error) { return blob, nil }
	if rc, err := tb.Fetch(t.Context(), 0, 1); err != nil {
		t.Fatal(err)
	} else {
		rc.Close()
	}
	f.removeTail("/mnt/x")
	if _, err := f.loadTail("/mnt/x"); err == nil {
		t.Error("the tail outlived its removal")
	}
}
