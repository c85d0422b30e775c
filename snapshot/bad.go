package snapshot

import (
	"context"
	"errors"
	"fmt"
	"maps"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
	"github.com/containerd/containerd/v2/pkg/snapshotters"
)

// Labels of a remote layer the FileSystem found bad: its content is not
// what the chain ID it was committed under promises (an image claiming
// another image's diff_ids). A bad layer stays mounted (its reads fail, so
// running containers see EIO rather than wrong bytes) but is withdrawn
// from reuse: its snapshot-ref label is removed, so containerd's metadata
// store no longer matches it to a Prepare of that chain ID, and a later
// Prepare of the chain ID commits a fresh snapshot under another name.
const (
	// LabelBad holds why the layer is bad. The FileSystem is given it at
	// every later Mount (after a restart) and refuses reads at once.
	LabelBad = "containerd.io/snapshot/lazysnap.bad"
	// LabelBadChainID holds the chain ID the bad layer was committed as,
	// the name containerd knows it by.
	LabelBadChainID = "containerd.io/snapshot/lazysnap.bad-chain-id"
)

// BadLayerReporter is implemented by file systems that can tell, from what
// they hold and without the network, which mounted layers are bad: by
// mountpoint, the reason.
type BadLayerReporter interface {
	BadLayers(ctx context.Context) (map[string]string, error)
}

// Forgetter removes the committed snapshot containerd knows as name, and its
// committed descendants, from containerd's own metadata, so that the next
// pull of an image with that chain ID prepares the layer again instead of
// reusing it. It must not remove snapshots containers use; it fails while
// they exist and is called again on the next round.
type Forgetter func(ctx context.Context, name string) error

// QuarantineBad withdraws the remote layers the FileSystem reports bad
// from reuse (see LabelBad) and asks the Forgetter (WithForgetter) to drop
// every bad layer from containerd's metadata. serve runs it periodically.
func (s *Snapshotter) QuarantineBad(ctx context.Context) error {
	rep, ok := s.fs.(BadLayerReporter)
	if !ok {
		return nil
	}
	bad, err := rep.BadLayers(ctx)
	if err != nil {
		return fmt.Errorf("asking the file system for bad layers: %w", err)
	}
	layers, err := s.remoteLayers(ctx)
	if err != nil {
		return fmt.Errorf("listing remote layers: %w", err)
	}
	var errs []error
	for _, l := range layers {
		if reason, found := bad[s.upperPath(l.id)]; found && l.labels[LabelBad] == "" {
			if l, err = s.quarantine(ctx, l, reason); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		if chain := l.labels[LabelBadChainID]; chain != "" && s.forget != nil {
			if err := s.forget(ctx, chain); err != nil {
				errs = append(errs, fmt.Errorf("withdrawing bad layer %s from containerd: %w", chain, err))
			}
		}
	}
	return errors.Join(errs...)
}

// quarantine relabels a bad layer: LabelBad and LabelBadChainID set, the
// snapshot-ref label gone.
func (s *Snapshotter) quarantine(ctx context.Context, l remoteLayer, reason string) (remoteLayer, error) {
	labels := maps.Clone(l.labels)
	chain := labels[snapshots.LabelSnapshotRef]
	if chain == "" {
		chain = l.name
	}
	delete(labels, snapshots.LabelSnapshotRef)
	labels[LabelBad] = reason
	labels[LabelBadChainID] = chain
	err := s.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
		_, err := storage.UpdateInfo(ctx, snapshots.Info{Name: l.name, Labels: labels}, "labels")
		return err
	})
	if err != nil {
		return l, fmt.Errorf("marking layer %s bad: %w", l.name, err)
	}
	s.metrics.badLayers.Inc()
	s.log.ErrorContext(ctx, "remote layer is bad and withdrawn from reuse",
		"snapshot", l.name, "image", labels[snapshotters.TargetRefLabel], "layer", labels[snapshotters.TargetLayerDigestLabel], "reason", reason)
	l.labels = labels
	return l, nil
}

// isBad reports whether a snapshot's labels mark it bad.
func isBad(labels map[string]string) bool { return labels[LabelBad] != "" }
