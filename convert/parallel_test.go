package convert

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/containerd/stargz-snapshotter/estargz"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"go.uber.org/goleak"

	"github.com/lazysnap/lazysnap/prefetchlist"
)

// layerDigests are the facts of a built layer that must not depend on how
// many cores built it.
type layerDigests struct {
	Blob, DiffID, TOC v1.Hash
	Size, USize       int64
}

// parallelFiles is a layer with files of many chunks, small files, links and
// directories, so that the blob has members of every kind.
func parallelFiles() []file {
	files := []file{dir("usr", 0o755), dir("usr/bin", 0o755), dir("usr/lib", 0o755), dir("etc", 0o755)}
	for i := range 3 {
		files = append(files, regBytes(fmt.Sprintf("usr/lib/big%d", i), randBytes(uint64(i), 300<<10+i*777)))
		files = append(files, regBytes(fmt.Sprintf("usr/lib/text%d", i), []byte(strings.Repeat("chunk "+strconv.Itoa(i), 40000))))
	}
	for i := range 40 {
		files = append(files, reg(fmt.Sprintf("etc/small%d", i), strings.Repeat("s", i*97)))
	}
	return append(files, symlink("usr/bin/big", "../lib/big1"), hardlink("usr/bin/hard", "usr/lib/big2"), reg("etc/empty", ""))
}

// TestParallelBuildIsIdentical converts one layer sequentially (one core, one
// worker) and on several cores, cutting the new blob at every member for the
// parallel diff_id, and checks that blob, diff_id, TOC digest and sizes are
// those of a plain estargz.Build of the same tar, which decompresses the
// blob in one piece. Layers without prioritized files have their first part
// written while they are staged (see stream.go).
func TestParallelBuildIsIdentical(t *testing.T) {
	prioritized := []string{"/usr/lib/big1", "/etc/small3", "/usr/lib/text2"}
	// A later entry of the same name, and a landmark in the source, which
	// estargz drops: the streamed first part must give up on them.
	repeated := append(parallelFiles(), reg("etc/small3", "again"), reg(estargz.NoPrefetchLandmark, "x"))
	// A large file read in part stays in place (its ranges go to the
	// annotation): the layer is the reference build of the other files.
	ranged := append(parallelFiles(), regBytes("usr/lib/huge", randBytes(9, RangedMinSize+5000)))
	rangedPrio := append([]string{"/usr/lib/huge"}, prioritized...)
	cases := []struct {
		name   string
		files  []file
		prio   []string
		ranges map[string][]prefetchlist.Range
		placed []string // the files the reference build places first, if not prio
	}{
		{name: "plain", files: parallelFiles()},
		{name: "prioritized", files: parallelFiles(), prio: prioritized},
		{name: "repeated", files: repeated},
		{name: "ranged", files: ranged, prio: rangedPrio, placed: prioritized,
			ranges: map[string][]prefetchlist.Range{"/usr/lib/huge": {{Start: 0, End: 64 << 10}}}},
	}
	for _, format := range []Format{FormatEStargz, FormatZstdChunked} {
		for _, tc := range cases {
			prio, placed := tc.prio, tc.placed
			if placed == nil {
				placed = prio
			}
			t.Run(strings.ReplaceAll(string(format), ":", "-")+"/"+tc.name, func(t *testing.T) {
				tarball := tarBytes(t, tc.files...)
				img := imageOf(t, gzLayer(t, tc.files...))
				opts := []Option{WithFormat(format), WithChunkSize(32 << 10), WithPrioritizedFiles(prio), WithPrioritizedRanges(tc.ranges)}
				want := referenceBuild(t, tarball, format, placed, 32<<10)
				seq := convertedDigests(t, img, 1, append(opts, WithConcurrency(1), WithLayerWorkers(1)))
				par := convertedDigests(t, img, 4, append(opts, WithLayerWorkers(4)))
				if seq != want {
					t.Errorf("sequential build:\n got %+v\nwant %+v", seq, want)
				}
				if par != want {
					t.Errorf("parallel build:\n got %+v\nwant %+v", par, want)
				}
			})
		}
	}
}

// convertedDigests converts img's one layer with GOMAXPROCS procs, the blob
// cut for decoding at every member start.
func convertedDigests(t *testing.T, img v1.Image, procs int, opts []Option) layerDigests {
	t.Helper()
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
	c := newConverter(t, opts...)
	c.opts.minSpan = 1
	out, err := c.Image(context.Background(), img)
	if err != nil {
		t.Fatal(err)
	}
	m, err := out.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := out.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	desc := m.Layers[0]
	toc, err := v1.NewHash(desc.Annotations[estargz.TOCJSONDigestAnnotation])
	if err != nil {
		t.Fatal(err)
	}
	usize, err := strconv.ParseInt(desc.Annotations[estargz.StoreUncompressedSizeAnnotation], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return layerDigests{Blob: desc.Digest, DiffID: cfg.RootFS.DiffIDs[0], TOC: toc, Size: desc.Size, USize: usize}
}

// referenceBuild builds the layer as the converter did before it decoded
// blobs in parallel: estargz.Build with the converter's settings and
// compression, computing the diff_id itself.
func referenceBuild(t *testing.T, tarball []byte, format Format, prioritized []string, chunkSize int) layerDigests {
	t.Helper()
	var names []string
	for _, p := range prioritized {
		names = append(names, strings.TrimPrefix(p, "/"))
	}
	c := newConverter(t, WithFormat(format))
	var comp estargz.Compression = newGzipCompression(c.level())
	if format == FormatZstdChunked {
		comp = newZstdCompression(c.level())
	}
	blob, err := estargz.Build(io.NewSectionReader(bytes.NewReader(tarball), 0, int64(len(tarball))),
		estargz.WithParallelism(c.opts.buildParts), estargz.WithChunkSize(chunkSize),
		estargz.WithPrioritizedFiles(names), estargz.WithCompression(comp))
	if err != nil {
		t.Fatal(err)
	}
	defer blob.Close()
	h := sha256.New()
	size, err := io.Copy(h, blob)
	if err != nil {
		t.Fatal(err)
	}
	usize, err := blob.UncompressedSize()
	if err != nil {
		t.Fatal(err)
	}
	return layerDigests{
		Blob:   v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", h.Sum(nil))},
		DiffID: v1.Hash{Algorithm: "sha256", Hex: blob.DiffID().Encoded()},
		TOC:    v1.Hash{Algorithm: "sha256", Hex: blob.TOCDigest().Encoded()},
		Size:   size,
		USize:  usize,
	}
}

// TestSpanReaderChecksCuts decodes a blob of gzip members cut at member
// starts, and fails, never returning other bytes, when a cut falls inside a
// member.
func TestSpanReaderChecksCuts(t *testing.T) {
	var blob, plain bytes.Buffer
	starts := []int64{}
	for i := range 6 {
		starts = append(starts, int64(blob.Len()))
		part := bytes.Repeat([]byte(fmt.Sprintf("member %d ", i)), 5000+i)
		plain.Write(part)
		blob.Write(gzipBytes(t, part))
	}
	newDecoder := func() (spanDecoder, error) { return &gzipSpanDecoder{}, nil }
	for _, workers := range []int{1, 3} {
		bc := &buildCompression{ctx: context.Background(), workers: workers, newDecoder: newDecoder, bounds: starts}
		sr := bc.newSpanReader(bytes.NewReader(blob.Bytes()))
		var got bytes.Buffer
		if _, err := io.Copy(&got, sr); err != nil {
			t.Fatalf("workers %d: %v", workers, err)
		}
		sr.Close()
		if !bytes.Equal(got.Bytes(), plain.Bytes()) {
			t.Fatalf("workers %d: decoded bytes differ", workers)
		}
	}
	bc := &buildCompression{ctx: context.Background(), workers: 2, newDecoder: newDecoder, bounds: []int64{0, starts[2] + 7, starts[4]}}
	sr := bc.newSpanReader(bytes.NewReader(blob.Bytes()))
	defer sr.Close()
	if _, err := io.Copy(io.Discard, sr); !errdefs.IsDataLoss(err) {
		t.Fatalf("cut inside a member: got %v, want a data loss error", err)
	}
}

// TestSpanReaderStopsWithContext checks that the parallel diff_id gives up
// when the build does, as estargz's goroutine computing it waits on it.
func TestSpanReaderStopsWithContext(t *testing.T) {
	first := gzipBytes(t, bytes.Repeat([]byte("a"), 1000))
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	bc := &buildCompression{ctx: ctx, workers: 2, bounds: []int64{0, int64(len(first)), 1 << 20},
		newDecoder: func() (spanDecoder, error) { return &gzipSpanDecoder{}, nil }}
	sr := bc.newSpanReader(pr)
	go pw.Write(first) // then the blob stalls, as when its reader stopped reading
	buf := make([]byte, 1000)
	if _, err := io.ReadFull(sr, buf); err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := sr.WriteTo(io.Discard); err != context.Canceled {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	pw.CloseWithError(io.ErrClosedPipe) // what estargz does with the error
	sr.Close()
}

// TestStreamedBuildLeavesNothing converts a two-layer image, and one whose
// second layer is truncated, and checks that no goroutine of the streamed
// first parts or of the parallel diff_id outlives the conversion.
func TestStreamedBuildLeavesNothing(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	good := gzLayer(t, parallelFiles()...)
	other := gzLayer(t, reg("etc/other", strings.Repeat("other ", 50000)))
	c := newConverter(t, WithChunkSize(32<<10))
	c.opts.minSpan = 1
	if _, err := c.Image(context.Background(), imageOf(t, good, other)); err != nil {
		t.Fatal(err)
	}
	blob := gzipBytes(t, tarBytes(t, parallelFiles()...))
	cut := &blobLayer{blob: blob[:len(blob)/2], diffID: sha(tarBytes(t, parallelFiles()...)), mt: types.OCILayer}
	if _, err := c.Image(context.Background(), imageOf(t, other, cut)); err == nil {
		t.Fatal("converted a truncated layer")
	}
}
