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

// The keys of an entry, as estargz's struct tags spell them.
const (
	keyName = 1 << iota
	keyType
	keySize
	keyModTime
	keyLinkName
	keyMode
	keyUID
	keyGID
	keyUname
	keyGname
	keyOffset
	keyInnerOffset
	keyDevMajor
	keyDevMinor
	keyXattrs
	keyDigest
	keyChunkOffset
	keyChunkSize
	keyChunkDigest
)

var entryKeys = map[string]int{
	"name": keyName, "type": keyType, "size": keySize, "modtime": keyModTime, "linkName": keyLinkName,
	"mode": keyMode, "uid": keyUID, "gid": keyGID, "userName": keyUname, "groupName": keyGname,
	"offset": keyOffset, "innerOffset": keyInnerOffset, "devMajor": keyDevMajor, "devMinor": keyDevMinor,
	"xattrs": keyXattrs, "digest": keyDigest, "chunkOffset": keyChunkOffset, "chunkSize": keyChunkSize,
	"chunkDigest": keyChunkDigest,
}

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
	seen := 0
	for {
		key, ok := p.raw()
		bit := entryKeys[string(key)]
		if !ok || bit == 0 || seen&bit != 0 || !p.byte(':') {
			return nil, 0, false
		}
		seen |= bit
		if !p.field(e, bit) {
			return nil, 0, false
		}
		if p.byte('}') {
			return e, p.at, true
		}
		if !p.byte(',') {
			return nil, 0, false
		}
	}
}

// field reads the value of the key bit into e.
func (p *entryParser) field(e *estargz.TOCEntry, bit int) bool {
	var ok bool
	switch bit {
	case keyName:
		e.Name, ok = p.str()
	case keyType:
		e.Type, ok = p.str()
	case keyModTime:
		e.ModTime3339, ok = p.str()
	case keyLinkName:
		e.LinkName, ok = p.str()
	case keyUname:
		e.Uname, ok = p.str()
	case keyGname:
		e.Gname, ok = p.str()
	case keyDigest:
		e.Digest, ok = p.str()
	case keyChunkDigest:
		e.ChunkDigest, ok = p.str()
	case keySize:
		e.Size, ok = p.int(64)
	case keyMode:
		e.Mode, ok = p.int(64)
	case keyOffset:
		e.Offset, ok = p.int(64)
	case keyInnerOffset:
		e.InnerOffset, ok = p.int(64)
	case keyChunkOffset:
		e.ChunkOffset, ok = p.int(64)
	case keyChunkSize:
		e.ChunkSize, ok = p.int(64)
	case keyUID:
		e.UID, ok = p.goInt()
	case keyGID:
		e.GID, ok = p.goInt()
	case keyDevMajor:
		e.DevMajor, ok = p.goInt()
	case keyDevMinor:
		e.DevMinor, ok = p.goInt()
	case keyXattrs:
		e.Xattrs, ok = p.xattrs()
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
