package record

import (
	"bytes"
	"io"
	"sync"
)

// maxHeldLine bounds the partial line kept while waiting for its end; a
// longer line is checked by its first maxHeldLine bytes.
const maxHeldLine = 64 << 10

// readySignal closes C the first time fire is called.
type readySignal struct {
	once sync.Once
	C    chan struct{}
}

func newReadySignal() *readySignal { return &readySignal{C: make(chan struct{})} }

func (r *readySignal) fire() { r.once.Do(func() { close(r.C) }) }

// lineWatcher copies a stream to a shared sink and fires ready at the first
// complete line containing text. An empty text never fires.
type lineWatcher struct {
	text  []byte
	ready *readySignal
	mu    *sync.Mutex // shared by the watchers of one workload's streams
	sink  io.Writer
	line  []byte
}

func (w *lineWatcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	_, _ = w.sink.Write(p) // a failing sink must not stop the workload
	w.mu.Unlock()
	if len(w.text) == 0 {
		return len(p), nil
	}
	rest := p
	for {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			break
		}
		w.check(append(w.line, rest[:i]...))
		w.line = w.line[:0]
		rest = rest[i+1:]
	}
	if room := maxHeldLine - len(w.line); room > 0 {
		w.line = append(w.line, rest[:min(room, len(rest))]...)
	}
	return len(p), nil
}

func (w *lineWatcher) check(line []byte) {
	if bytes.Contains(line, w.text) {
		w.ready.fire()
	}
}
