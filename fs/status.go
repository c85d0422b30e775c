package fs

import (
	"cmp"
	"slices"

	"github.com/lazysnap/lazysnap/fs/layer"
)

// Layer states reported by Status.
const (
	StatePrefetching = "prefetching" // the prioritized region is being fetched
	StateFetching    = "fetching"    // the background fetch is filling the cache
	StateLazy        = "lazy"        // fetched on demand only (background fetch off or failed)
	StateComplete    = "complete"    // every chunk is in the cache
	StateBad         = "bad"         // its content is not what the image promises; reads fail
)

// LayerStatus is one mounted layer as an operator sees it.
type LayerStatus struct {
	Mountpoint string
	ImageRef   string
	State      string
	DiffID     string // DiffIDPending, DiffIDVerified, DiffIDMismatch or DiffIDOff
	Error      string `json:",omitempty"` // why the layer is bad
	layer.Stats
}

// Status returns every mounted layer, sorted by image and mountpoint.
func (f *FS) Status() []LayerStatus {
	f.mu.Lock()
	out := make([]LayerStatus, 0, len(f.mounts))
	for mp, m := range f.mounts {
		if m != nil {
			s := m.layer.Stats()
			st := LayerStatus{Mountpoint: mp, ImageRef: m.ref, State: f.state(m, s), Stats: s,
				DiffID: m.diffID.Load().(string)}
			if err := m.layer.Bad(); err != nil {
				st.State, st.Error = StateBad, err.Error()
			}
			out = append(out, st)
		}
	}
	f.mu.Unlock()
	slices.SortFunc(out, func(a, b LayerStatus) int {
		return cmp.Or(cmp.Compare(a.ImageRef, b.ImageRef), cmp.Compare(a.Mountpoint, b.Mountpoint))
	})
	return out
}

func (f *FS) state(m *mounted, s layer.Stats) string {
	select {
	case <-m.fetches.prefetched:
	default:
		return StatePrefetching
	}
	switch {
	case s.BackgroundDone || s.ChunksPresent == s.ChunksTotal:
		return StateComplete
	case !f.opts.background:
		return StateLazy
	}
	select {
	case <-m.fetches.done:
		return StateLazy // the background fetch gave up
	default:
		return StateFetching
	}
}
