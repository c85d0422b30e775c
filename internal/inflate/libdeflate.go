//go:build cgo && libdeflate

package inflate

/*
#cgo LDFLAGS: -l:libdeflate.a
#include <libdeflate.h>
*/
import "C"

import (
	"runtime"
	"sync"
	"unsafe"
)

// Available says whether this build decompresses with libdeflate.
const Available = true

// Gunzipper decompresses gzip members, reusing libdeflate decompressors
// (about 10 KiB of tables each) between calls. Its zero value is ready;
// it is safe for concurrent use.
type Gunzipper struct{ pool sync.Pool }

type decompressor struct {
	d *C.struct_libdeflate_decompressor
}

func (g *Gunzipper) get() *decompressor {
	if d, _ := g.pool.Get().(*decompressor); d != nil {
		return d
	}
	d := &decompressor{d: C.libdeflate_alloc_decompressor()}
	if d.d == nil {
		panic("inflate: libdeflate could not allocate a decompressor")
	}
	// The pool drops what it holds at a GC: free the C memory then.
	runtime.AddCleanup(d, func(p *C.struct_libdeflate_decompressor) { C.libdeflate_free_decompressor(p) }, d.d)
	return d
}

// Gunzip decompresses src, which must be exactly one gzip member, into
// dst and returns the size it decompressed to. The member's CRC-32 and
// size trailer are checked.
func (g *Gunzipper) Gunzip(dst, src []byte) (int, error) {
	out, in, err := g.GunzipFirst(dst, src)
	if err == nil && in != len(src) {
		return 0, ErrTrailingData
	}
	return out, err
}

// GunzipFirst decompresses the first gzip member of src into dst and
// returns the size it decompressed to and the size of the member in src.
// The member's CRC-32 and size trailer are checked.
func (g *Gunzipper) GunzipFirst(dst, src []byte) (out, in int, err error) {
	if len(src) == 0 {
		return 0, 0, ErrCorrupt
	}
	d := g.get()
	defer g.pool.Put(d)
	var cin, cout C.size_t
	var dstp unsafe.Pointer
	if len(dst) > 0 {
		dstp = unsafe.Pointer(&dst[0])
	}
	r := C.libdeflate_gzip_decompress_ex(d.d, unsafe.Pointer(&src[0]), C.size_t(len(src)),
		dstp, C.size_t(len(dst)), &cin, &cout)
	switch r {
	case C.LIBDEFLATE_SUCCESS:
		return int(cout), int(cin), nil
	case C.LIBDEFLATE_INSUFFICIENT_SPACE:
		return 0, 0, ErrShortBuffer
	default:
		return 0, 0, ErrCorrupt
	}
}
