package index

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/containerd/stargz-snapshotter/estargz"
)

// DecodeBytes decodes the JSON of a TOC held in memory as Decode does, with
// the same results and the same errors, but decodes the entries of a large
// TOC on several cores (WithDecodeWorkers): a Mount waits for its TOC to be
// decoded, and the JSON decoding of a big layer's TOC is the largest part of
// that wait.
//
// The entries array is cut into pieces at guessed entry boundaries (where
// "},{" appears: json.Marshal, which estargz writes with, puts no space
// between entries), and each piece is decoded on its own by a json.Decoder,
// entry by entry, with the checks Decode makes. A piece's decoder must end
// exactly where the next piece starts, which proves that the cut was between
// two entries and not in a string; the rest of the document (the version,
// and that nothing follows) is decoded with the entries array cut out by
// Decode itself. Anything else (a cut that is not an entry boundary, an
// entry Decode would refuse, more entries than allowed, a cancelled
// context) and the whole TOC is decoded again by Decode, so that a TOC is
// refused with exactly the error Decode gives, and costs at most twice the
// decoding.
func DecodeBytes(ctx context.Context, data []byte, opts ...Option) (*estargz.JTOC, error) {
	o := buildOptions(opts)
	if workers := o.workers(); workers > 1 && len(data) >= o.minParallelBytes {
		if toc, ok := decodeParallel(ctx, data, o, workers); ok {
			return toc, nil
		}
	}
	return Decode(ctx, bytes.NewReader(data), opts...)
}

// workers is how many goroutines DecodeBytes decodes with.
func (o options) workers() int {
	if o.decodeWorkers > 0 {
		return o.decodeWorkers
	}
	return min(runtime.GOMAXPROCS(0), maxAutoDecodeWorkers)
}

// maxAutoDecodeWorkers bounds the default of WithDecodeWorkers: a Mount's
// TOC is not worth more cores than that, which other work of the daemon
// (fetching, reading ahead the next layers' TOCs) needs too.
const maxAutoDecodeWorkers = 4

// piecesPerWorker is how many pieces each worker gets on average: more
// pieces than workers keep a worker whose core is busy elsewhere from
// holding up the others.
const piecesPerWorker = 4

// piece is a part of the entries array, from one entry's first byte to
// the next piece's, and what decoding it gave.
type piece struct {
	start, end int
	entries    []*estargz.TOCEntry
	ok         bool
	close      int // for the last piece: the offset of the array's "]"
}

// decodeParallel decodes data as Decode would, or reports false when it
// cannot vouch for the result being Decode's.
func decodeParallel(ctx context.Context, data []byte, o options, workers int) (*estargz.JTOC, bool) {
	open, ok := entriesStart(data)
	if !ok {
		return nil, false
	}
	ps := cut(data, open, max(1, o.minParallelBytes/piecesPerWorker, (len(data)-open)/(workers*piecesPerWorker)))
	var (
		next  atomic.Int64 // the next piece to decode
		count atomic.Int64 // entries decoded so far, over all pieces
		stop  atomic.Bool  // a piece failed: the others stop early
		wg    sync.WaitGroup
	)
	for range min(workers, len(ps)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(ps) || stop.Load() {
					return
				}
				if !decodePiece(ctx, data, &ps[i], i == len(ps)-1, o.maxEntries, &count, &stop) {
					stop.Store(true)
					return
				}
			}
		})
	}
	wg.Wait()
	if stop.Load() {
		return nil, false
	}
	last := ps[len(ps)-1]
	// The document with the entries cut out ("entries":[]), for Decode to
	// check and to decode the rest of.
	rest := io.MultiReader(bytes.NewReader(data[:open]), bytes.NewReader(data[last.close:]))
	toc, err := Decode(ctx, rest, WithMaxEntries(o.maxEntries))
	if err != nil || toc.Entries != nil {
		return nil, false
	}
	if n := int(count.Load()); n > 0 {
		toc.Entries = make([]*estargz.TOCEntry, 0, n)
		for _, p := range ps {
			toc.Entries = append(toc.Entries, p.entries...)
		}
	}
	return toc, true
}

// entriesStart returns the offset just after the "[" opening the entries
// array of the document in data, decoding what comes before it as Decode
// does; false if the document's entries are no array (Decode will tell).
func entriesStart(data []byte) (int, bool) {
	d := &decoder{dec: json.NewDecoder(bytes.NewReader(data))}
	if d.delim('{') != nil {
		return 0, false
	}
	for d.dec.More() {
		key, err := d.key()
		if err != nil {
			return 0, false
		}
		if strings.EqualFold(key, "entries") {
			tok, err := d.dec.Token()
			if err != nil || tok != json.Delim('[') {
				return 0, false
			}
			return int(d.dec.InputOffset()), true
		}
		if d.skip() != nil {
			return 0, false
		}
	}
	return 0, false
}

// cut cuts the entries array starting at open into pieces of about size
// bytes, each starting at what looks like the start of an entry: just
// after a "}," followed by "{".
func cut(data []byte, open, size int) []piece {
	ps := []piece{{start: open}}
	for at := open + size; at < len(data); at += size {
		i := bytes.Index(data[at:], []byte("},{"))
		if i < 0 {
			break
		}
		at += i + 2
		ps[len(ps)-1].end = at
		ps = append(ps, piece{start: at})
	}
	ps[len(ps)-1].end = len(data)
	return ps
}

// decodePiece decodes the entries of p as the entries loop of Decode does,
// and reports whether p ended exactly where the next piece starts (or, for
// the last piece, with the array's "]"). It walks the commas and white
// space between entries itself, as a json.Decoder reading the piece as an
// array would, and decodes each entry with decodeEntry.
func decodePiece(ctx context.Context, data []byte, p *piece, last bool, maxEntries int, count *atomic.Int64, stop *atomic.Bool) bool {
	at := p.start
	for i := 0; ; i++ {
		at = skipSpace(data, at)
		if at >= len(data) || data[at] == ']' || data[at] == '}' {
			// The end of the array, where Decode would look for its "]".
			if last && at < len(data) && data[at] == ']' {
				p.close = at
				return true
			}
			return false
		}
		if i > 0 {
			if data[at] != ',' {
				return false
			}
			at = skipSpace(data, at+1)
		}
		if i%tickEvery == 0 && (ctx.Err() != nil || stop.Load()) {
			return false
		}
		if count.Add(1) > int64(maxEntries) {
			return false
		}
		e, end, ok := decodeEntry(data, at)
		if !ok || checkEntry(i, e) != nil {
			return false
		}
		p.entries = append(p.entries, e)
		if end >= p.end {
			return false // the entry ran past the cut: the cut was in it
		}
		if !last && nextEntryAt(data, end) == p.end {
			return true
		}
		at = end
	}
}

// nextEntryAt returns where the entry after one ending at end starts: past
// white space, a comma and white space; -1 if something else follows.
func nextEntryAt(data []byte, end int) int {
	i := skipSpace(data, end)
	if i >= len(data) || data[i] != ',' {
		return -1
	}
	return skipSpace(data, i+1)
}

// skipSpace skips JSON white space.
func skipSpace(data []byte, i int) int {
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
		i++
	}
	return i
}
