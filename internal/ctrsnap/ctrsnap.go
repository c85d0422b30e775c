// Package ctrsnap removes snapshots from containerd's own metadata through
// its API: lazysnap uses it to withdraw a layer it found bad, so that the
// next pull of an image with that chain ID prepares the layer again
// instead of reusing it.
package ctrsnap

import (
	"context"
	"errors"
	"fmt"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
)

// Forgetter removes snapshots of one snapshotter from the containerd at an
// address, in every namespace. It dials on each call: it is called rarely,
// and containerd may restart in between.
type Forgetter struct {
	address, snapshotter string
}

// NewForgetter returns a Forgetter for the snapshotter containerd knows as
// snapshotter (the proxy plugin's name) at address.
func NewForgetter(address, snapshotter string) *Forgetter {
	return &Forgetter{address: address, snapshotter: snapshotter}
}

// Forget removes the committed snapshot name and its committed descendants
// (their chain IDs derive from it) in every namespace. Snapshots containers
// use are never removed: while one exists, Forget fails with an error
// wrapping errdefs.ErrFailedPrecondition, and the caller tries again later.
// A snapshot already gone is no error.
func (f *Forgetter) Forget(ctx context.Context, name string) error {
	client, err := containerd.New(f.address)
	if err != nil {
		return fmt.Errorf("connecting to containerd at %s: %w", f.address, err)
	}
	defer client.Close()
	nss, err := client.NamespaceService().List(ctx)
	if err != nil {
		return fmt.Errorf("listing containerd namespaces: %w", err)
	}
	var errs []error
	for _, ns := range nss {
		nctx := namespaces.WithNamespace(ctx, ns)
		if err := removeTree(nctx, client.SnapshotService(f.snapshotter), name); err != nil {
			errs = append(errs, fmt.Errorf("namespace %s: %w", ns, err))
		}
	}
	return errors.Join(errs...)
}

// removeTree removes name after its committed children, depth first. An
// active or view child (a container's) stops it.
func removeTree(ctx context.Context, sn snapshots.Snapshotter, name string) error {
	var children []snapshots.Info
	err := sn.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		children = append(children, info)
		return nil
	}, fmt.Sprintf("parent==%q", name))
	if err != nil {
		return fmt.Errorf("listing children of %s: %w", name, err)
	}
	for _, c := range children {
		if c.Kind != snapshots.KindCommitted {
			return fmt.Errorf("snapshot %s is in use by %s: %w", name, c.Name, errdefs.ErrFailedPrecondition)
		}
		if err := removeTree(ctx, sn, c.Name); err != nil {
			return err
		}
	}
	if err := sn.Remove(ctx, name); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("removing snapshot %s: %w", name, err)
	}
	return nil
}
