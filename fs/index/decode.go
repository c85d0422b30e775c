package index

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/containerd/stargz-snapshotter/estargz"
)

// Decode reads the JSON of a TOC from r, one entry at a time, refusing it as
// soon as it holds more entries than WithMaxEntries allows or an entry beyond
// the limits of limits.go: json.Unmarshal would first allocate every entry of
// a tiny hostile document like {"entries":[{},{},...]}. Top-level fields
// other than "version" and "entries" are skipped, and keys match without
// regard to case, as with json.Unmarshal (which estargz uses). Anything but
// white space after the document is refused, so that a digest of everything
// r yields covers exactly what was decoded. A TOC refused is an error
// wrapping errdefs.ErrInvalidArgument; r should be bounded by the caller.
func Decode(ctx context.Context, r io.Reader, opts ...Option) (*estargz.JTOC, error) {
	o := buildOptions(opts)
	d := &decoder{dec: json.NewDecoder(r), ctx: ctx, max: o.maxEntries}
	toc, err := d.document()
	if err != nil {
		return nil, err
	}
	if _, err := d.dec.Token(); !errors.Is(err, io.EOF) {
		return nil, invalid("data after the TOC document")
	}
	return toc, nil
}

// decoder walks a TOC document token by token.
type decoder struct {
	dec *json.Decoder
	ctx context.Context
	max int
}

// document decodes the top-level object.
func (d *decoder) document() (*estargz.JTOC, error) {
	if err := d.delim('{'); err != nil {
		return nil, err
	}
	toc := &estargz.JTOC{}
	seen := false
	for d.dec.More() {
		key, err := d.key()
		if err != nil {
			return nil, err
		}
		switch {
		case strings.EqualFold(key, "entries"):
			if seen {
				return nil, invalid("two entries lists")
			}
			seen = true
			if toc.Entries, err = d.entries(); err != nil {
				return nil, err
			}
		case strings.EqualFold(key, "version"):
			if err := d.dec.Decode(&toc.Version); err != nil {
				return nil, invalid("version: %v", err)
			}
		default:
			if err := d.skip(); err != nil {
				return nil, err
			}
		}
	}
	return toc, d.delim('}')
}

// entries decodes the entries array (or null), checking each entry as it
// arrives.
func (d *decoder) entries() ([]*estargz.TOCEntry, error) {
	tok, err := d.dec.Token()
	if err != nil {
		return nil, invalid("entries: %v", err)
	}
	if tok == nil {
		return nil, nil
	}
	if tok != json.Delim('[') {
		return nil, invalid("entries is a %v, not a list", tok)
	}
	var es []*estargz.TOCEntry
	for i := 0; d.dec.More(); i++ {
		if i >= d.max {
			return nil, invalid("more than %d entries", d.max)
		}
		if err := tick(d.ctx, i); err != nil {
			return nil, err
		}
		var e *estargz.TOCEntry
		if err := d.dec.Decode(&e); err != nil {
			return nil, invalid("entry %d: %v", i, err)
		}
		if err := checkEntry(i, e); err != nil {
			return nil, err
		}
		es = append(es, e)
	}
	return es, d.delim(']')
}

// key reads an object key.
func (d *decoder) key() (string, error) {
	tok, err := d.dec.Token()
	if err != nil {
		return "", invalid("%v", err)
	}
	k, ok := tok.(string)
	if !ok {
		return "", invalid("object key %v", tok)
	}
	return k, nil
}

// skip reads past one value of any shape, token by token: no recursion and
// no buffering of the whole value.
func (d *decoder) skip() error {
	depth := 0
	for {
		tok, err := d.dec.Token()
		if err != nil {
			return invalid("%v", err)
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			depth++
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
		if depth == 0 {
			return nil
		}
	}
}

func (d *decoder) delim(want json.Delim) error {
	tok, err := d.dec.Token()
	if err != nil {
		return invalid("%v", err)
	}
	if tok != want {
		return invalid("got %v, want %v", tok, want)
	}
	return nil
}

// tickEvery is how many steps a loop of Build or Decode runs between checks
// of its context: often enough to stop within milliseconds, rarely enough to
// cost nothing.
const tickEvery = 4096

// tick returns the context's error every tickEvery steps.
func tick(ctx context.Context, i int) error {
	if i%tickEvery != 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("building the index: %w", err)
	}
	return nil
}
