package fs

import (
	"context"
	"fmt"
	"maps"

	"github.com/containerd/errdefs"

	"github.com/lazysnap/lazysnap/fs/layer"
	"github.com/lazysnap/lazysnap/fs/node"
)

// Handover is what another process needs to serve a mounted layer on: its
// FUSE connection and state (node.Handover) and the labels of its Mount.
// Its files are the caller's to close.
type Handover struct {
	node.Handover
	Labels map[string]string
}

// Handovers returns the handover of the layer at mountpoint, or of every
// layer when mountpoint is "". While a handover's files are open the
// mounts outlive this process: requests wait in the kernel until another
// FS resumes them (Resume).
func (f *FS) Handovers(mountpoint string) ([]Handover, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Handover
	for mp, m := range f.mounts {
		if m == nil || mountpoint != "" && mp != mountpoint {
			continue
		}
		h, err := m.node.Handover()
		if err != nil {
			closeHandovers(out)
			return nil, fmt.Errorf("handing over %s: %w", mp, err)
		}
		out = append(out, Handover{Handover: h, Labels: maps.Clone(m.labels)})
	}
	if mountpoint != "" && len(out) == 0 {
		return nil, fmt.Errorf("nothing mounted at %s: %w", mountpoint, errdefs.ErrNotFound)
	}
	return out, nil
}

func closeHandovers(hs []Handover) {
	for _, h := range hs {
		h.Close()
	}
}

// Resume serves the layer of h, which an earlier process mounted and
// handed over, as Mount would have; it takes h's files. The layer is
// built again from its labels: its TOC from the tail Mount saved
// (WithTOCTailDir), without the registry, else as Mount does, failing as
// Mount does; the mount then stays as it is, and its requests wait, until
// the caller unmounts it or another Resume succeeds.
func (f *FS) Resume(ctx context.Context, h Handover) error {
	taken := false
	defer func() {
		if !taken {
			h.Close()
		}
	}()
	if h.Mountpoint == "" {
		return fmt.Errorf("handover without a mountpoint: %w", errdefs.ErrInvalidArgument)
	}
	err := f.serve(ctx, h.Mountpoint, h.Labels, true, func(l *layer.Layer, opts []node.Option) (*node.Mounted, error) {
		taken = true
		return node.Resume(h.Handover, l, opts...)
	})
	if err != nil {
		return fmt.Errorf("resuming %s: %w", h.Mountpoint, err)
	}
	return nil
}
