package fs

import (
	"context"
	"log/slog"
	"maps"
	"sync"
	"time"

	"github.com/lazysnap/lazysnap/fs/trace"
	"github.com/lazysnap/lazysnap/prefetchlist"
)

// traces keeps the first-open trace of every image with a mounted layer and
// saves them to their directory: periodically while they change, and when
// an image's last layer is unmounted. Before each save it collects the
// byte ranges read of large files from the image's mounted layers (their
// read bits live in fs/node, per layer); a layer being unmounted hands
// over its ranges one last time.
type traces struct {
	dir      trace.Dir
	maxFiles int
	logger   *slog.Logger

	mu     sync.Mutex
	images map[string]*imageTrace

	stop context.CancelFunc
	done chan struct{}
}

// imageTrace is one image's recorder and how many mounted layers use it.
type imageTrace struct {
	rec    *trace.Recorder
	layers int
	reads  map[readSource]struct{} // the mounted layers recording reads
}

// readSource is a mounted layer that records the ranges read of its files
// (a *node.Mounted with node.WithReadRanges).
type readSource interface {
	ReadRanges() map[string][]prefetchlist.Range
}

// newTraces returns nil (record nothing) when dir is "".
func newTraces(dir string, maxFiles int, every time.Duration, logger *slog.Logger) *traces {
	if dir == "" {
		return nil
	}
	ctx, stop := context.WithCancel(context.Background())
	t := &traces{dir: trace.Dir(dir), maxFiles: maxFiles, logger: logger, images: map[string]*imageTrace{},
		stop: stop, done: make(chan struct{})}
	go t.saveEvery(ctx, every)
	return t
}

// acquire returns the recorder of image for one more mounted layer,
// resuming the trace saved by an earlier run.
func (t *traces) acquire(image string) *trace.Recorder {
	t.mu.Lock()
	defer t.mu.Unlock()
	it := t.images[image]
	if it == nil {
		rec, warnings := t.dir.Resume(image, t.maxFiles)
		for _, w := range warnings {
			t.logger.Warn("earlier trace partly ignored", "image", image, "warning", w)
		}
		it = &imageTrace{rec: rec, reads: map[readSource]struct{}{}}
		t.images[image] = it
	}
	it.layers++
	return it.rec
}

// addReads has image's trace collect the ranges read from src, a layer
// mounted after acquire, until release.
func (t *traces) addReads(image string, src readSource) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if it := t.images[image]; it != nil {
		it.reads[src] = struct{}{}
	}
}

// release takes the last ranges read from src (nil when the layer never
// served), saves image's trace and forgets it when its last layer goes.
func (t *traces) release(image string, src readSource) {
	t.mu.Lock()
	it := t.images[image]
	if it == nil {
		t.mu.Unlock()
		return
	}
	it.layers--
	if it.layers == 0 {
		delete(t.images, image)
	}
	if src != nil {
		delete(it.reads, src)
	}
	t.mu.Unlock()
	if src != nil {
		collect(it.rec, src)
	}
	t.save(it.rec)
}

// collect adds the ranges src read to rec. Each call gets everything src
// read since it was mounted, and the recorder keeps the union.
func collect(rec *trace.Recorder, src readSource) {
	for p, rs := range src.ReadRanges() {
		rec.AddRanges(p, rs)
	}
}

func (t *traces) save(rec *trace.Recorder) {
	if err := t.dir.Save(rec); err != nil {
		t.logger.Warn("saving trace", "image", rec.Image(), "error", err)
	}
}

func (t *traces) saveAll() {
	t.mu.Lock()
	its := make([]imageTrace, 0, len(t.images))
	for _, it := range t.images {
		its = append(its, imageTrace{rec: it.rec, reads: maps.Clone(it.reads)})
	}
	t.mu.Unlock()
	for _, it := range its {
		for src := range it.reads {
			collect(it.rec, src)
		}
		t.save(it.rec)
	}
}

func (t *traces) saveEvery(ctx context.Context, every time.Duration) {
	defer close(t.done)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			t.saveAll()
		}
	}
}

// close stops the periodic saves and saves everything once more.
func (t *traces) close() {
	t.stop()
	<-t.done
	t.saveAll()
}
