package fs

import (
	"bytes"

	"github.com/lazysnap/lazysnap/fs/elfdeps"
	"github.com/lazysnap/lazysnap/fs/index"
	"github.com/lazysnap/lazysnap/fs/layer"
)

// Libraries that are mostly data, left to their reads.
//
// A layer fetches the rest of a file of a few chunks when two of its reads
// miss (layer.fetchRestOnSecondMiss), since a program maps its code and
// faults it in all over: cc1 reads 67% of its 33 MB at start-up, libjvm.so
// 67% of its 24 MB. A data library is mapped the same way and misses twice
// as early (its header, then its dynamic section at its end), but its code
// only looks entries up in it: node's ICU data library is 31 MB of tables
// and 261 bytes of code, and node reads 2 MB of it at start-up. Its rest
// cost 10 MB of the link before ready, about 0.4 s at 200 Mbit/s (make
// bench -request-log). So an ELF file whose code is less than
// dataLibraryCodeShare of it is left to its reads (layer.LeaveToReads).
// Whether it is, is read from its program headers, in the head the first
// read of it brings, before its second read can miss.

// dataLibraryCodeShare: an ELF file with less code than 1/dataLibraryCodeShare
// of its bytes is mostly data. Libraries and programs of code are far
// above it (cc1 62%, libjvm.so 58%, libpython 38%), a data library far
// below (libicudata under 0.01%).
const dataLibraryCodeShare = 8

// leaveDataToReads tells l to leave file id, whose first bytes are head,
// to its reads when it is an ELF file that is mostly data. Headers that
// are not in the head, or cannot be read, leave the file as it is.
func leaveDataToReads(l *layer.Layer, id index.ID, head []byte) {
	loaded, err := elfdeps.ParseLoaded(bytes.NewReader(head))
	if err != nil || loaded.All == 0 {
		return
	}
	if size := l.Index().Attr(id).Size; size > 0 && loaded.Code < uint64(size)/dataLibraryCodeShare {
		l.LeaveToReads(id)
	}
}
