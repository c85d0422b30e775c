package layer

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/lazysnap/lazysnap/internal/inflate"
)

// TestReadFrameWholeAndStreamed stores a file's chunk from frames that
// readWholeFrame takes (one gzip member) and from frames it leaves to the
// streaming reader (two members, a trailer claiming more than a frame may
// hold), and refuses, storing nothing, frames that do not hold the chunk:
// the bytes a read returns never depend on which decoder ran. It runs in
// both builds; with -tags libdeflate the first case is decoded by
// libdeflate.
func TestReadFrameWholeAndStreamed(t *testing.T) {
	t.Parallel()
	data := randomData(3000, 7)
	tl := buildTestLayer(t, testChunk, testFile{"f", data})
	member := func(parts ...[]byte) []byte {
		var b bytes.Buffer
		for _, p := range parts {
			zw := gzip.NewWriter(&b)
			zw.Write(p)
			zw.Close()
		}
		return b.Bytes()
	}
	bigTrailer := member(data)
	binary.LittleEndian.PutUint32(bigTrailer[len(bigTrailer)-4:], maxWholeFrame+1)
	corrupt := member(data)
	corrupt[len(corrupt)/2] ^= 0x40
	cases := []struct {
		name  string
		frame []byte
		ok    bool
	}{
		{"one member", member(data), true},
		{"two members", member(data[:1000], data[1000:]), true},
		// Streamed: the chunk is read before the trailer, and its digest
		// is what vouches for it.
		{"trailer beyond a frame's bound", bigTrailer, true},
		{"corrupt", corrupt, false},
		{"shorter than the chunk", member(data[:2999]), false},
		{"other bytes", member(bytes.Repeat([]byte{1}, 3000)), false},
	}
	for _, c := range cases {
		l := tl.open(t)
		f, err := l.OpenFile(tl.id(t, l, "f"))
		if err != nil {
			t.Fatal(err)
		}
		ts := []target{{f: f, i: 0}}
		stored := 0
		err = l.readFrame(bytes.NewReader(c.frame), int64(len(c.frame)), ts, func() { stored++ })
		f.Close()
		switch {
		case c.ok && (err != nil || stored != 1):
			t.Errorf("%s: %v, %d chunks stored; want the chunk stored", c.name, err, stored)
		case !c.ok && (!errors.Is(err, errBadChunk) || stored != 0):
			t.Errorf("%s: %v, %d chunks stored; want errBadChunk and none", c.name, err, stored)
		}
		if c.ok {
			before := tl.blob.fetchCount()
			tl.readAll(t, l, "f")
			if tl.blob.fetchCount() != before {
				t.Errorf("%s: the read fetched the chunk the frame stored", c.name)
			}
		}
	}
	if !inflate.Available {
		t.Log("built without libdeflate: every frame was streamed")
	}
}
