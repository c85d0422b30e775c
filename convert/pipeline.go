package convert

import (
	"io"
	"sync"
	"sync/atomic"
)

// readAhead reads r on its own goroutine, a few buffers ahead of its reader,
// so that decompressing a source layer and checking, hashing and staging its
// tar run on two cores.
type readAhead struct {
	full chan chunkRead
	free chan []byte
	stop chan struct{}
	done chan struct{}
	src  io.Closer
	cur  chunkRead
	once sync.Once
}

type chunkRead struct {
	b   []byte
	off int
	err error
}

// startReadAhead reads r ahead in n buffers of size bytes. Closing it closes
// src too, which ends a read of r blocked on it.
func startReadAhead(r io.Reader, src io.Closer, n, size int) *readAhead {
	ra := &readAhead{
		full: make(chan chunkRead, n),
		free: make(chan []byte, n),
		stop: make(chan struct{}),
		done: make(chan struct{}),
		src:  src,
	}
	for range n {
		ra.free <- make([]byte, size)
	}
	go ra.fill(r)
	return ra
}

func (ra *readAhead) fill(r io.Reader) {
	defer close(ra.done)
	for {
		var buf []byte
		select {
		case buf = <-ra.free:
		case <-ra.stop:
			return
		}
		n, err := readFull(r, buf)
		select {
		case ra.full <- chunkRead{b: buf[:n], err: err}:
		case <-ra.stop:
			return
		}
		if err != nil {
			return
		}
	}
}

// readFull is io.ReadFull but for keeping r's own errors: an
// io.ErrUnexpectedEOF from a truncated gzip stream must stay one.
func readFull(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func (ra *readAhead) Read(p []byte) (int, error) {
	for ra.cur.off == len(ra.cur.b) {
		if ra.cur.err != nil {
			return 0, ra.cur.err
		}
		if ra.cur.b != nil {
			ra.free <- ra.cur.b[:cap(ra.cur.b)]
		}
		ra.cur = <-ra.full
	}
	n := copy(p, ra.cur.b[ra.cur.off:])
	ra.cur.off += n
	return n, nil
}

// Close stops the reading and waits for it.
func (ra *readAhead) Close() error {
	ra.once.Do(func() { close(ra.stop) })
	select {
	case <-ra.done:
	default:
		ra.src.Close()
		<-ra.done
	}
	return nil
}

// writeBehind writes to w on its own goroutine, a few buffers behind its
// writer, so that writing a file and hashing or checking what goes into it
// run on two cores.
//
// The size of the writes matters on the test machines (kernel 6.18, ext4):
// converting 1 GiB on one core took 8.4 cpu-s with 64 KiB writes, 8.7 with
// 32 KiB, 9.5 with 256 KiB, and 1 MiB writes were worse still.
type writeBehind struct {
	w      io.Writer
	full   chan []byte
	free   chan []byte
	buf    []byte
	done   chan struct{}
	failed atomic.Pointer[error]
}

func startWriteBehind(w io.Writer, n, size int) *writeBehind {
	wb := &writeBehind{
		w:    w,
		full: make(chan []byte, n),
		free: make(chan []byte, n),
		done: make(chan struct{}),
	}
	for range n {
		wb.free <- make([]byte, 0, size)
	}
	wb.buf = <-wb.free
	go wb.drain()
	return wb
}

func (wb *writeBehind) drain() {
	defer close(wb.done)
	for b := range wb.full {
		if wb.failed.Load() == nil {
			if _, err := wb.w.Write(b); err != nil {
				wb.failed.Store(&err)
			}
		}
		wb.free <- b[:0]
	}
}

func (wb *writeBehind) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if err := wb.failed.Load(); err != nil {
			return n - len(p), *err
		}
		m := copy(wb.buf[len(wb.buf):cap(wb.buf)], p)
		wb.buf, p = wb.buf[:len(wb.buf)+m], p[m:]
		if len(wb.buf) == cap(wb.buf) {
			wb.full <- wb.buf
			wb.buf = <-wb.free
		}
	}
	return n, nil
}

// Close writes what is buffered, waits for the writes and returns the first
// error; it does not close w. Closing again returns the same error.
func (wb *writeBehind) Close() error {
	if wb.buf == nil { // closed before
		<-wb.done
		return wb.err()
	}
	if len(wb.buf) > 0 {
		wb.full <- wb.buf
	}
	wb.buf = nil
	close(wb.full)
	<-wb.done
	return wb.err()
}

func (wb *writeBehind) err() error {
	if err := wb.failed.Load(); err != nil {
		return *err
	}
	return nil
}

// writeBehindBuffers and writeBehindSize size a writeBehind's buffers; see
// writeBehind about the size.
const (
	writeBehindBuffers = 16
	writeBehindSize    = 64 << 10
)
