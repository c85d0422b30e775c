package convert

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path"
	"strings"
	"sync"

	"github.com/containerd/stargz-snapshotter/estargz"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
)

// A layer without prioritized files is built as estargz.Build builds it, byte
// for byte, but its first part is compressed while the source is still being
// read: inflating a source layer is one stream, so otherwise one core would
// inflate while the other waits for the whole tar. estargz.Build lists the
// tar's entries after a landmark, cuts the list into parts by their content
// sizes (a part ends after the entry whose running total passes the next
// multiple of total/parts) and writes each part with its own estargz.Writer,
// then merges the parts' TOCs. The total is known only at the end, but it is
// at least what has been read so far, so an entry whose predecessors sum to
// at most read/parts is surely in the first part.

// streamEntry is a staged tar entry as estargz.Build lists it.
type streamEntry struct {
	hdr *tar.Header
	off int64 // of the content in the staged tar
}

// landmarkEntry is the entry estargz.Build puts first in a layer without
// prioritized files.
func landmarkEntry() streamEntry {
	return streamEntry{hdr: &tar.Header{Name: estargz.NoPrefetchLandmark, Typeflag: tar.TypeReg, Size: 1}, off: -1}
}

// landmarkContents is estargz's content of a landmark file.
const landmarkContents = 0xf

// cleanEntryName is estargz's key for entry names.
func cleanEntryName(name string) string {
	return strings.TrimPrefix(path.Clean("/"+name), "/")
}

// growingFile is the staged tar while it is written: reads wait for the
// bytes they want.
type growingFile struct {
	f       *os.File // written
	r       *os.File // read, as f is closed when staging ends
	mu      sync.Mutex
	cond    *sync.Cond
	written int64
	done    bool
}

func newGrowingFile(f *os.File) (*growingFile, error) {
	r, err := os.Open(f.Name())
	if err != nil {
		return nil, err
	}
	g := &growingFile{f: f, r: r}
	g.cond = sync.NewCond(&g.mu)
	return g, nil
}

func (g *growingFile) close() { g.r.Close() }

func (g *growingFile) Write(p []byte) (int, error) {
	n, err := g.f.Write(p)
	g.mu.Lock()
	g.written += int64(n)
	g.mu.Unlock()
	g.cond.Broadcast()
	return n, err
}

// finish ends the waits: the file is complete, or will not be.
func (g *growingFile) finish() {
	g.mu.Lock()
	g.done = true
	g.mu.Unlock()
	g.cond.Broadcast()
}

func (g *growingFile) ReadAt(p []byte, off int64) (int, error) {
	g.mu.Lock()
	for !g.done && g.written < off+int64(len(p)) {
		g.cond.Wait()
	}
	g.mu.Unlock()
	return g.r.ReadAt(p, off)
}

// errStreamAborted stops the streamed first part: a later entry of the
// same name removed an entry already written (estargz keeps the last one,
// at the end), or the read failed.
var errStreamAborted = errors.New("streamed build aborted")

// streamedPart writes one part of the layer with an estargz.Writer and
// keeps the TOC and size the writer would hand to WriteTOCAndFooter.
type streamedPart struct {
	file *os.File
	toc  *estargz.JTOC
	size int64
	err  error
	done chan struct{}
}

// tocCapture is the Compression of one part: estargz.Build merges the parts'
// TOCs instead of writing them, and so does buildStreamed.
type tocCapture struct {
	estargz.Compression
	part *streamedPart
}

func (c *tocCapture) WriteTOCAndFooter(_ io.Writer, off int64, toc *estargz.JTOC, _ hash.Hash) (digest.Digest, error) {
	c.part.toc, c.part.size = toc, off
	return "", nil
}

// startPart writes the tar stream r as one part into a new file in dir.
func startPart(dir string, comp estargz.Compression, chunkSize int, r io.Reader) *streamedPart {
	p := &streamedPart{done: make(chan struct{})}
	go func() {
		defer close(p.done)
		if p.file, p.err = os.CreateTemp(dir, "part-*"); p.err != nil {
			io.Copy(io.Discard, r)
			return
		}
		w := estargz.NewWriterWithCompressor(p.file, &tocCapture{Compression: comp, part: p})
		w.ChunkSize = chunkSize
		if p.err = w.AppendTar(r); p.err != nil {
			io.Copy(io.Discard, r)
			return
		}
		_, p.err = w.Close()
	}()
	return p
}

// free closes and removes the part's file.
func (p *streamedPart) free() {
	p.file.Close()
	os.Remove(p.file.Name())
}

// freeAtEOF calls free once r is read to its end.
type freeAtEOF struct {
	r    io.Reader
	free func()
	once sync.Once
}

func (f *freeAtEOF) Read(b []byte) (int, error) {
	n, err := f.r.Read(b)
	if err == io.EOF {
		f.once.Do(f.free)
	}
	return n, err
}

func (p *streamedPart) remove() {
	<-p.done
	if p.file != nil {
		p.file.Close()
		os.Remove(p.file.Name())
	}
}

// writeEntries writes entries as the tar stream estargz.Build gives a part's
// writer, reading contents from staged.
func writeEntries(tw *tar.Writer, staged io.ReaderAt, entries []streamEntry) error {
	for _, e := range entries {
		if err := tw.WriteHeader(e.hdr); err != nil {
			return err
		}
		var content io.Reader = bytes.NewReader([]byte{landmarkContents})
		if e.off >= 0 {
			content = io.NewSectionReader(staged, e.off, e.hdr.Size)
		}
		if _, err := io.Copy(tw, content); err != nil {
			return err
		}
	}
	return nil
}

// entriesReader is estargz's readerFromEntries over the staged tar.
func entriesReader(staged io.ReaderAt, entries []streamEntry) io.Reader {
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		if err := writeEntries(tw, staged, entries); err != nil {
			pw.CloseWithError(err)
			return
		}
		pw.CloseWithError(tw.Close())
	}()
	return pr
}

// divideEntries is estargz.Build's division of entries into parts.
func divideEntries(entries []streamEntry, parts int) [][]streamEntry {
	var total int64
	for _, e := range entries {
		total += e.hdr.Size
	}
	unit := total / int64(parts)
	next, off := unit, int64(0)
	set := [][]streamEntry{{}}
	for _, e := range entries {
		set[len(set)-1] = append(set[len(set)-1], e)
		off += e.hdr.Size
		if off > next {
			set = append(set, []streamEntry{})
			next += unit
		}
	}
	return set
}

// firstPart lists the entries as staging reads them and writes those surely
// in the first part to the first part's writer while the source is read.
type firstPart struct {
	parts   int
	staged  *growingFile
	comp    *buildCompression
	zc      *zstdCompression
	mu      sync.Mutex
	cond    *sync.Cond
	list    []streamEntry
	names   map[string]bool
	seen    int64
	final   int // entries in the first part once the list is complete, -1 before
	aborted bool
	part    *streamedPart
	fed     chan struct{} // closed when feed returns
}

// startFirstPart starts the first part's writer on the staged tar that
// staging writes to staged.
func (c *Converter) startFirstPart(staged *growingFile) *firstPart {
	bc, zc := c.compression()
	fp := &firstPart{parts: c.opts.buildParts, staged: staged, comp: bc, zc: zc, names: make(map[string]bool), final: -1, fed: make(chan struct{})}
	fp.cond = sync.NewCond(&fp.mu)
	l := landmarkEntry()
	fp.list, fp.seen = []streamEntry{l}, l.hdr.Size
	pr, pw := io.Pipe()
	go fp.feed(pw)
	fp.part = startPart(c.dir, bc.Compression, c.opts.chunkSize, pr)
	return fp
}

// add lists a staged entry whose content starts at off, as estargz's import
// of a tar does: landmarks are dropped. A repeated name would move the entry
// to the end, which may take back what was written: the stream aborts.
func (fp *firstPart) add(hdr *tar.Header, off int64) {
	name := cleanEntryName(hdr.Name)
	if name == estargz.PrefetchLandmark || name == estargz.NoPrefetchLandmark {
		return
	}
	fp.mu.Lock()
	if fp.names[name] {
		fp.aborted = true
	}
	fp.names[name] = true
	fp.list = append(fp.list, streamEntry{hdr: hdr, off: off})
	fp.seen += hdr.Size
	fp.mu.Unlock()
	fp.cond.Broadcast()
}

// next waits until the entry after fed (whose sizes sum to cum) can be
// written, and returns it; ok is false at the end of the first part.
func (fp *firstPart) next(fed int, cum int64) (e streamEntry, ok bool, err error) {
	fp.mu.Lock()
	defer fp.mu.Unlock()
	for {
		switch {
		case fp.aborted:
			return e, false, errStreamAborted
		case fp.final >= 0 && fed >= fp.final:
			return e, false, nil
		case fed < len(fp.list) && (fed < fp.final || cum <= fp.seen/int64(fp.parts)):
			return fp.list[fed], true, nil
		}
		fp.cond.Wait()
	}
}

func (fp *firstPart) feed(pw *io.PipeWriter) {
	defer close(fp.fed)
	tw := tar.NewWriter(pw)
	var cum int64
	for fed := 0; ; fed++ {
		e, ok, err := fp.next(fed, cum)
		if err != nil || !ok {
			if err == nil {
				err = tw.Close()
			}
			pw.CloseWithError(err)
			return
		}
		if err := writeEntries(tw, fp.staged, []streamEntry{e}); err != nil {
			fp.abort()
			pw.CloseWithError(err)
			return
		}
		cum += e.hdr.Size
	}
}

func (fp *firstPart) abort() {
	fp.mu.Lock()
	fp.aborted = true
	fp.mu.Unlock()
	fp.cond.Broadcast()
}

// close aborts the first part if it is not done and removes its files.
func (fp *firstPart) close() {
	fp.abort()
	fp.staged.finish()
	fp.part.remove()
	<-fp.fed
	fp.staged.close()
}

// buildStreamed finishes a layer whose first part was written while it was
// staged: it writes the other parts, merges the TOCs as estargz.Build does,
// and writes the blob while hashing it and decoding it for the diff_id. It
// returns errStreamAborted when the layer must be built by estargz.Build.
func (c *Converter) buildStreamed(ctx context.Context, j *layerJob, mediaType types.MediaType) (*built, error) {
	fp := j.first
	fp.mu.Lock()
	aborted, list := fp.aborted, fp.list
	fp.mu.Unlock()
	if aborted {
		return nil, errStreamAborted
	}
	parts := divideEntries(list, c.opts.buildParts)
	fp.mu.Lock()
	fp.final = len(parts[0])
	fp.mu.Unlock()
	fp.cond.Broadcast()
	in, err := os.Open(j.tarPath)
	if err != nil {
		return nil, err
	}
	defer in.Close()
	all := []*streamedPart{fp.part}
	for _, p := range parts[1:] {
		all = append(all, startPart(c.dir, fp.comp.Compression, c.opts.chunkSize, entriesReader(in, p)))
	}
	defer func() {
		for _, p := range all[1:] {
			p.remove()
		}
	}()
	for _, p := range all {
		<-p.done
		if p.err != nil {
			if fp.abortedNow() {
				return nil, errStreamAborted
			}
			return nil, p.err
		}
	}
	// Freeing a large file's cached pages costs about 0.2 cpu-s per GiB: do
	// it for the staged tar, no longer read, while the blob is written.
	var frees sync.WaitGroup
	defer frees.Wait()
	frees.Go(func() {
		in.Close()
		fp.staged.close()
		os.Remove(j.tarPath)
	})
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	fp.comp.ctx = ctx
	return c.writeStreamed(fp, all, mediaType, &frees)
}

func (fp *firstPart) abortedNow() bool {
	fp.mu.Lock()
	defer fp.mu.Unlock()
	return fp.aborted
}

// writeStreamed writes the parts as one blob, as estargz.Build's
// closeWithCombine merges them.
func (c *Converter) writeStreamed(fp *firstPart, parts []*streamedPart, mediaType types.MediaType, frees *sync.WaitGroup) (*built, error) {
	mtoc := &estargz.JTOC{Version: parts[0].toc.Version}
	var off int64
	var rs []io.Reader
	for _, p := range parts {
		for _, e := range p.toc.Entries {
			if (e.Type == "reg" && e.Size > 0) || e.Type == "chunk" {
				e.Offset += off
			}
			mtoc.Entries = append(mtoc.Entries, e)
		}
		mtoc.Version = max(mtoc.Version, p.toc.Version)
		rs = append(rs, &freeAtEOF{r: io.NewSectionReader(p.file, 0, p.size), free: func() { frees.Go(p.free) }})
		off += p.size
	}
	var tail bytes.Buffer
	tocDigest, err := fp.comp.WriteTOCAndFooter(&tail, off, mtoc, nil)
	if err != nil {
		return nil, err
	}
	out, err := os.CreateTemp(c.dir, "layer-*")
	if err != nil {
		return nil, err
	}
	b := &built{path: out.Name(), mediaType: mediaType}
	h, diff, n := sha256.New(), sha256.New(), &byteCount{}
	// The blob is hashed behind too: the goroutine reading it hands pieces
	// to the decoders, which the diff_id waits for.
	wb := startWriteBehind(io.MultiWriter(out, h, n), writeBehindBuffers, writeBehindSize)
	dec, err := fp.comp.Reader(io.TeeReader(io.MultiReader(append(rs, &tail)...), wb))
	var usize int64
	if err == nil {
		usize, err = io.Copy(diff, dec)
		dec.Close()
	}
	if werr := wb.Close(); err == nil {
		err = werr
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(b.path)
		return nil, fmt.Errorf("writing the new layer: %w", err)
	}
	b.size = n.n
	b.digest = v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", h.Sum(nil))}
	b.diffID = v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", diff.Sum(nil))}
	b.annotate(tocDigest.String(), usize, fp.zc)
	return b, nil
}

// byteCount counts what is written to it.
type byteCount struct{ n int64 }

func (b *byteCount) Write(p []byte) (int, error) {
	b.n += int64(len(p))
	return len(p), nil
}
