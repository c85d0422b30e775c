package snapshot

import "context"

// FileSystem mounts layers lazily. The snapshotter only needs these three
// calls; package fs implements them in-process and internal/fused's client
// implements them over a unix socket to the long-lived `lazysnap fused`.
//
// Errors should carry an errdefs category: the snapshotter uses it to name
// the reason of a fallback (see fallbackReason).
type FileSystem interface {
	// Mount mounts the layer the labels describe at mountpoint, read-only,
	// or fails (then the snapshotter falls back to a normal pull of that
	// layer). A failed Mount leaves nothing mounted at mountpoint.
	Mount(ctx context.Context, mountpoint string, labels map[string]string) error
	// Check reports whether the mount at mountpoint is alive and its layer
	// reachable. It returns an error wrapping errdefs.ErrNotFound when
	// nothing is mounted there.
	Check(ctx context.Context, mountpoint string, labels map[string]string) error
	// Unmount unmounts and releases the layer's cache holds. It returns an
	// error wrapping errdefs.ErrNotFound when nothing is mounted there.
	Unmount(ctx context.Context, mountpoint string) error
}
