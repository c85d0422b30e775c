package fs

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/lazysnap/lazysnap/fs/trace"
)

// traces keeps the first-open trace of every image with a mounted layer and
// saves them to their directory: periodically while they change, and when
// an image's last layer is unmounted.
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
		it = &imageTrace{rec: rec}
		t.images[image] = it
	}
	it.layers++
	return it.rec
}

// release saves image's trace and forgets it when its last layer goes.
func (t *traces) release(image string) {
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
	t.mu.Unlock()
	t.save(it.rec)
}

func (t *traces) save(rec *trace.Recorder) {
	if err := t.dir.Save(rec); err != nil {
		t.logger.Warn("saving trace", "image", rec.Image(), "error", err)
	}
}

func (t *traces) saveAll() {
	t.mu.Lock()
	recs := make([]*trace.Recorder, 0, len(t.images))
	for _, it := range t.images {
		recs = append(recs, it.rec)
	}
	t.mu.Unlock()
	for _, r := range recs {
		t.save(r)
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
