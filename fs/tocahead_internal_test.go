package fs

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/lazysnap/lazysnap/fs/layer"
)

// TestTOCAheadTakenBeforeRead: a Mount may take a layer's entry before the
// read-ahead comes to that layer (it reads the layers one after another);
// the read-ahead still reads into that entry and the Mount gets its
// answer. The read-ahead looked the entry up again, found none, and
// crashed fused (a nil entry) in TestRebootRemountsLayers.
func TestTOCAheadTakenBeforeRead(t *testing.T) {
	a := newTOCsAhead()
	defer a.close()
	second, third := digest.FromString("second"), digest.FromString("third")
	release := make(chan struct{})
	read := func(_ context.Context, tg target) (*layer.Unverified, tocTail, error) {
		if tg.digest == second {
			<-release // the read-ahead is still on the second layer
		}
		return nil, tocTail{}, errors.New("no registry in this test")
	}
	a.start(target{ref: "img", digest: digest.FromString("first")},
		map[string]string{LabelImageLayers: second.String() + "," + third.String()}, read)

	taken := make(chan bool, 1)
	go func() {
		_, _, ok := a.take(context.Background(), target{ref: "img", digest: third})
		taken <- ok
	}()
	for pending := true; pending; time.Sleep(time.Millisecond) {
		a.mu.Lock()
		_, pending = a.pending[third]
		a.mu.Unlock()
	}
	close(release)
	select {
	case ok := <-taken:
		if ok {
			t.Error("take reported a TOC whose read failed")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the Mount that took the entry never got its answer")
	}
}
