package fs

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"reflect"
	"slices"
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

// TestTOCTailFormats: a tail saved reads back the same; so does one in the
// earlier format (one JSON object, the bytes in base64), which a mount
// resumed across an upgrade finds; a file cut short or grown is refused
// (the Mount then reads the TOC from the registry).
func TestTOCTailFormats(t *testing.T) {
	t.Parallel()
	tail := tocTail{Digest: digest.FromString("blob"), Size: 1 << 40, Ranges: []tailRange{
		{Off: 1<<40 - 51, Data: []byte("footer and more\n{\"not\":\"a header\"}\n")},
		{Off: 7, Data: []byte{}},
		{Off: 1 << 30, Data: bytes.Repeat([]byte{0, '\n', 0xff}, 1000)},
	}}
	f := &FS{opts: defaultOptions()}
	f.opts.tocTailDir = t.TempDir()
	if err := f.saveTail("/mnt/x", tail); err != nil {
		t.Fatal(err)
	}
	got, err := f.loadTail("/mnt/x")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, tail) {
		t.Errorf("loaded %+v, saved %+v", got, tail)
	}
	saved, err := os.ReadFile(f.tailPath("/mnt/x"))
	if err != nil {
		t.Fatal(err)
	}
	earlier, err := json.Marshal(tail)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := parseTail(earlier); err != nil || !reflect.DeepEqual(got, tail) {
		t.Errorf("the earlier format: %+v, %v; want %+v", got, err, tail)
	}
	for name, b := range map[string][]byte{
		"cut short":    saved[:len(saved)-1],
		"grown":        append(slices.Clip(saved), 0),
		"bad header":   append([]byte("{\n"), saved...),
		"negative len": []byte(`{"digest":"sha256:00","size":9,"ranges":[{"off":0,"len":-1}]}` + "\n"),
	} {
		if _, err := parseTail(b); err == nil {
			t.Errorf("%s: loaded", name)
		}
	}
}

// BenchmarkSaveTail saves the tail of a big layer's TOC (2 MiB), as its
// Mount does.
func BenchmarkSaveTail(b *testing.B) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 128<<10)
	f := &FS{opts: defaultOptions()}
	f.opts.tocTailDir = b.TempDir()
	tail := tocTail{Digest: digest.FromString("blob"), Size: 1 << 30, Ranges: []tailRange{{Off: 1<<30 - int64(len(data)), Data: data}}}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if err := f.saveTail("/mnt/x", tail); err != nil {
			b.Fatal(err)
		}
	}
}
