package index

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strconv"
	"unicode/utf8"

	"github.com/containerd/stargz-snapshotter/estargz"
)

// decodeEntry decodes the TOC entry whose JSON starts at data[at], as a
// json.Decoder decoding into a *estargz.TOCEntry would, and returns it with
// the offset just past it; false where json would fail.
//
// Decoding a big layer's TOC is most of what its Mount waits for once the
// TOC is in, and most of that was encoding/json's reflection. So the entries
// estargz writes (json.Marshal: known keys spelled as in the struct tags,
// each once, strings without escapes, integers) are read by parseEntry,
// which declines anything else; a declined entry is decoded by json. The
// two agree on every entry parseEntry takes (FuzzParseEntry).
func decodeEntry(data []byte, at int) (*estargz.TOCEntry, int, bool) {
	if e, end, ok := parseEntry(data, at); ok {
		return e, end, true
	}
	dec := json.NewDecoder(bytes.NewReader(data[at:]))
	var e *estargz.TOCEntry
	if err := dec.Decode(&e); err != nil {
		return nil, 0, false
	}
	return e, at + int(dec.InputOffset()), true
}

// entryFields says where the value of each key of an entry goes, the keys
// spelled as estargz's struct tags spell them: a *string, *int64, *int or
// the xattrs' map.
var entryFields = []struct {
	key string
	dst func(e *estargz.TOCEntry) any
}{
	{"name", func(e *estargz.TOCEntry) any { return &e.Name }},
	{"type", func(e *estargz.TOCEntry) any { return &e.Type }},
	{"size", func(e *estargz.TOCEntry) any { return &e.Size }},
	{"modtime", func(e *estargz.TOCEntry) any { return &e.ModTime3339 }},
	{"linkName", func(e *estargz.TOCEntry) any { return &e.LinkName }},
	{"mode", func(e *estargz.TOCEntry) any { return &e.Mode }},
	{"uid", func(e *estargz.TOCEntry) any { return &e.UID }},
	{"gid", func(e *estargz.TOCEntry) any { return &e.GID }},
	{"userName", func(e *estargz.TOCEntry) any { return &e.Uname }},
	{"groupName", func(e *estargz.TOCEntry) any { return &e.Gname }},
	{"offset", func(e *estargz.TOCEntry) any { return &e.Offset }},
	{"innerOffset", func(e *estargz.TOCEntry) any { return &e.InnerOffset }},
	{"devMajor", func(e *estargz.TOCEntry) any { return &e.DevMajor }},
	{"devMinor", func(e *estargz.TOCEntry) any { return &e.DevMinor }},
	{"xattrs", func(e *estargz.TOCEntry) any { return &e.Xattrs }},
	{"digest", func(e *estargz.TOCEntry) any { return &e.Digest }},
	{"chunkOffset", func(e *estargz.TOCEntry) any { return &e.ChunkOffset }},
	{"chunkSize", func(e *estargz.TOCEntry) any { return &e.ChunkSize }},
	{"chunkDigest", func(e *estargz.TOCEntry) any { return &e.ChunkDigest }},
}

// entryKeys finds a key's place in entryFields.
var entryKeys = func() map[string]int {
	m := make(map[string]int, len(entryFields))
	for i, f := range entryFields {
		m[f.key] = i
	}
	return m
}()

// parseEntry reads the entry object at data[at] if it has the shape
// json.Marshal gives a TOCEntry (white space between tokens allowed), and
// returns it with the offset just past its "}". It declines (false) rather
// than decide anything json decides in a way of its own: keys that are not
// spelled exactly as the struct tags (json matches them ignoring case) or
// that repeat (json merges), null, booleans, strings with escapes, control
// characters or invalid UTF-8 (json replaces it), numbers with a fraction or
// an exponent, or beyond the field's range.
func parseEntry(data []byte, at int) (*estargz.TOCEntry, int, bool) {
	p := entryParser{data: data, at: at}
	if !p.byte('{') {
		return nil, 0, false
	}
	e := new(estargz.TOCEntry)
	if p.byte('}') {
		return e, p.at, true
	}
	var seen uint32 // a bit per key of entryFields
	for {
		key, ok := p.raw()
		i, known := entryKeys[string(key)]
		if !ok || !known || seen&(1<<i) != 0 || !p.byte(':') || !p.value(entryFields[i].dst(e)) {
			return nil, 0, false
		}
		seen |= 1 << i
		if p.byte('}') {
			return e, p.at, true
		}
		if !p.byte(',') {
			return nil, 0, false
		}
	}
}

// value reads a value into dst, one of entryFields' destinations.
func (p *entryParser) value(dst any) bool {
	var ok bool
	switch d := dst.(type) {
	case *string:
		*d, ok = p.str()
	case *int64:
		*d, ok = p.int(64)
	case *int:
		*d, ok = p.goInt()
	case *map[string][]byte:
		*d, ok = p.xattrs()
	}
	return ok
}

// entryParser reads JSON tokens from data at at.
type entryParser struct {
	data []byte
	at   int
}

// byte skips white space and then c, if c is next; reports whether it was.
func (p *entryParser) byte(c byte) bool {
	p.at = skipSpace(p.data, p.at)
	if p.at < len(p.data) && p.data[p.at] == c {
		p.at++
		return true
	}
	return false
}

// str reads a string without escapes or control characters, in valid UTF-8.
func (p *entryParser) str() (string, bool) {
	s, ok := p.raw()
	return string(s), ok
}

// raw reads a string as str does, and returns its bytes in data.
func (p *entryParser) raw() ([]byte, bool) {
	if !p.byte('"') {
		return nil, false
	}
	start, ascii := p.at, true
	for ; p.at < len(p.data); p.at++ {
		switch c := p.data[p.at]; {
		case c == '"':
			s := p.data[start:p.at]
			p.at++
			if !ascii && !utf8.Valid(s) {
				return nil, false
			}
			return s, true
		case c == '\\' || c < 0x20:
			return nil, false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return nil, false
}

// int reads an integer (no fraction, no exponent, no leading zero) that
// fits in bits.
func (p *entryParser) int(bits int) (int64, bool) {
	p.at = skipSpace(p.data, p.at)
	start := p.at
	if p.at < len(p.data) && p.data[p.at] == '-' {
		p.at++
	}
	digits := p.at
	for p.at < len(p.data) && '0' <= p.data[p.at] && p.data[p.at] <= '9' {
		p.at++
	}
	n := p.at - digits
	if n == 0 || n > 1 && p.data[digits] == '0' {
		return 0, false
	}
	if p.at < len(p.data) && (p.data[p.at] == '.' || p.data[p.at] == 'e' || p.data[p.at] == 'E') {
		return 0, false
	}
	if n > maxSafeDigits {
		v, err := strconv.ParseInt(string(p.data[start:p.at]), 10, bits)
		return v, err == nil
	}
	var v int64
	for _, c := range p.data[digits:p.at] {
		v = v*10 + int64(c-'0')
	}
	if digits > start {
		v = -v
	}
	if bits < 64 && (v < -1<<(bits-1) || v >= 1<<(bits-1)) {
		return 0, false
	}
	return v, true
}

// maxSafeDigits is the most decimal digits that always fit in an int64.
const maxSafeDigits = 18

// goInt reads an integer that fits in an int.
func (p *entryParser) goInt() (int, bool) {
	v, ok := p.int(strconv.IntSize)
	return int(v), ok
}

// xattrs reads an object of base64 strings, decoded as json decodes a
// []byte.
func (p *entryParser) xattrs() (map[string][]byte, bool) {
	if !p.byte('{') {
		return nil, false
	}
	m := map[string][]byte{}
	if p.byte('}') {
		return m, true
	}
	for {
		k, ok := p.str()
		if !ok || !p.byte(':') {
			return nil, false
		}
		v, ok := p.raw()
		if !ok {
			return nil, false
		}
		b := make([]byte, base64.StdEncoding.DecodedLen(len(v)))
		n, err := base64.StdEncoding.Decode(b, v)
		if err != nil {
			return nil, false
		}
		m[k] = b[:n]
		if p.byte('}') {
			return m, true
		}
		if !p.byte(',') {
			return nil, false
		}
	}
}
