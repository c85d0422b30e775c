package layer

// The rest of a chunk window. A read of a file converted in chunks smaller
// than estargz's default (4 MiB) fetches, in the same request and after its
// own chunks, the file's next chunks up to WithChunkWindow's bytes (4 MiB)
// past the start of its last chunk; a file in chunks of 4 MiB or more gets
// none. The read returns as soon as its own chunks are stored, and the
// window's follow on the same stream. So the file costs no more round trips
// than in 4 MiB chunks (a program reads more of a large file than one small
// chunk near where it read), and the read waits for its own chunk only,
// not for the 4 MiB around it: the JVM's module image is read in scattered
// places one at a time, each read waiting for the whole chunk it lands in.

// withWindow returns run (one request's chunks, in blob order) with the
// chunks of its last chunk's file that start less than WithChunkWindow's
// bytes after that chunk, claimed as prefetch flights, up to the first one
// present or claimed by another request. The window's chunks are written
// through a File of their own, which done closes once the request has
// ended: the read's File may be closed as soon as the read returns.
func (l *Layer) withWindow(run []target) (_ []target, done func()) {
	from := run[len(run)-1]
	limit := from.chunk().FileOffset + l.opts.chunkWindow
	var f *File
	done = func() {
		if f != nil {
			f.Close()
		}
	}
	for i := from.i + 1; i < len(from.f.chunks) && from.f.chunks[i].FileOffset < limit; i++ {
		if f == nil {
			var err error
			if f, err = l.OpenFile(from.f.id); err != nil {
				return run, done // a window is a bet: it never fails a read
			}
		}
		t, ok := l.claimPrefetch(f, i)
		if !ok {
			break
		}
		run = append(run, t)
	}
	return run, done
}
