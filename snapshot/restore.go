package snapshot

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
)

type remoteLayer struct {
	id     string
	name   string
	labels map[string]string
}

// restoreRemote makes sure every committed remote layer is mounted after a
// restart. With `lazysnap fused` the mounts usually survived and Check
// passes; after a reboot or a crash of the FUSE side they are mounted again
// from the labels stored at commit. A layer that cannot be mounted is
// logged and left: reads from it fail until a later restart mounts it.
func (s *Snapshotter) restoreRemote(ctx context.Context) error {
	layers, err := s.remoteLayers(ctx)
	if errdefs.IsNotFound(err) {
		return nil // a new store has no buckets yet
	}
	if err != nil {
		return fmt.Errorf("listing remote layers: %w", err)
	}
	for _, l := range layers {
		s.restoreLayer(ctx, l)
	}
	return nil
}

func (s *Snapshotter) restoreLayer(ctx context.Context, l remoteLayer) {
	if s.fs == nil {
		s.log.WarnContext(ctx, "remote layer not restored: no file system", "snapshot", l.name)
		return
	}
	dir := s.upperPath(l.id)
	err := s.fs.Check(ctx, dir, l.labels)
	if err == nil {
		return
	}
	s.log.InfoContext(ctx, "remounting remote layer", "snapshot", l.name, "check", err)
	if err := s.fs.Mount(ctx, dir, l.labels); err != nil {
		s.log.ErrorContext(ctx, "remote layer could not be remounted; reads from it fail", "snapshot", l.name, "error", err)
	}
}

func (s *Snapshotter) remoteLayers(ctx context.Context) ([]remoteLayer, error) {
	var layers []remoteLayer
	err := s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		return storage.WalkInfo(ctx, func(ctx context.Context, info snapshots.Info) error {
			if info.Kind != snapshots.KindCommitted || !isRemote(info.Labels) {
				return nil
			}
			id, _, _, err := storage.GetInfo(ctx, info.Name)
			if err != nil {
				return err
			}
			layers = append(layers, remoteLayer{id: id, name: info.Name, labels: info.Labels})
			return nil
		})
	})
	return layers, err
}
