package fs

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/pkg/snapshotters"
	"github.com/opencontainers/go-digest"

	"github.com/lazysnap/lazysnap/fs/layer"
)

// LabelImageLayers is the label containerd's remote-snapshot handler puts
// on a layer's Prepare: the blob digests of that layer and the image's
// layers above it, comma-separated (as many as fit in a label).
const LabelImageLayers = snapshotters.TargetImageLayersLabel

// tocAheadTTL is how long a TOC read ahead waits for its layer's Mount:
// containerd prepares the next layer within milliseconds of the last, so a
// TOC still unclaimed after this belongs to a layer that is not coming
// (present already, or a pull given up), and its memory is let go.
const tocAheadTTL = time.Minute

// tocsAhead reads the TOCs of an image's next layers while its first is
// being mounted. containerd prepares an image's layers one after another,
// each Mount waiting on its TOC's round trips and decoding; the first
// Prepare names every layer's blob (LabelImageLayers), so the TOCs of the
// others can be read in the background, and their Mounts only check them
// against their TOC digest (layer.ReadTOCAhead, Unverified.Verify).
type tocsAhead struct {
	ctx    context.Context // cancelled by close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	pending map[digest.Digest]*tocAhead
}

// tocAhead is one layer's TOC being read, or read.
type tocAhead struct {
	ref  string
	done chan struct{} // closed when toc, tail and err are set
	toc  *layer.Unverified
	tail tocTail
	err  error
}

func newTOCsAhead() *tocsAhead {
	ctx, cancel := context.WithCancel(context.Background())
	return &tocsAhead{ctx: ctx, cancel: cancel, pending: map[digest.Digest]*tocAhead{}}
}

// start reads, one after another in the background, the TOCs of the
// layers labels lists after the one being mounted (t) that no one reads
// yet, with read (f.readTOCAhead).
func (a *tocsAhead) start(t target, labels map[string]string, read func(context.Context, target) (*layer.Unverified, tocTail, error)) {
	if a.ctx.Err() != nil {
		return // closed: nothing would read what is registered
	}
	type todo struct {
		t target
		e *tocAhead
	}
	var todos []todo
	a.mu.Lock()
	for _, s := range strings.Split(labels[LabelImageLayers], ",") {
		d, err := digest.Parse(strings.TrimSpace(s))
		if err != nil || d == t.digest || a.pending[d] != nil {
			continue
		}
		e := &tocAhead{ref: t.ref, done: make(chan struct{})}
		a.pending[d] = e
		todos = append(todos, todo{target{ref: t.ref, digest: d}, e})
	}
	a.mu.Unlock()
	if len(todos) == 0 {
		return
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		for _, next := range todos {
			a.read(next.t, next.e, read)
		}
	}()
}

// read reads t's TOC into e. e is the entry start registered, not looked
// up again: a Mount of t's layer may have taken it from pending already,
// and waits for it to be done.
func (a *tocsAhead) read(t target, e *tocAhead, read func(context.Context, target) (*layer.Unverified, tocTail, error)) {
	ctx, cancel := context.WithTimeout(a.ctx, tocAheadTTL)
	defer cancel()
	e.toc, e.tail, e.err = read(ctx, t)
	close(e.done)
	time.AfterFunc(tocAheadTTL, func() { a.drop(t.digest, e) })
}

// drop forgets e unless it was taken (or replaced) before.
func (a *tocsAhead) drop(d digest.Digest, e *tocAhead) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.pending[d] == e {
		delete(a.pending, d)
	}
}

// take returns the TOC read ahead for t, once, waiting for it while it is
// being read; ok is false when none was read for t's layer of t's image,
// when reading it failed, or when it is not the TOC t names (the Mount then
// reads the TOC as without read-ahead, and reports what it finds).
func (a *tocsAhead) take(ctx context.Context, t target) (toc *layer.TOC, tail tocTail, ok bool) {
	a.mu.Lock()
	e := a.pending[t.digest]
	if e != nil && e.ref == t.ref {
		delete(a.pending, t.digest)
	}
	a.mu.Unlock()
	if e == nil || e.ref != t.ref {
		return nil, tail, false
	}
	select {
	case <-e.done:
	case <-ctx.Done():
		return nil, tail, false
	}
	if e.err != nil {
		return nil, tail, false
	}
	toc, err := e.toc.Verify(t.tocDigest)
	if err != nil {
		return nil, tail, false
	}
	return toc, e.tail, true
}

// close stops the reads ahead and waits for them.
func (a *tocsAhead) close() {
	a.cancel()
	a.wg.Wait()
}
