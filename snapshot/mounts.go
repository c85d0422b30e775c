package snapshot

import (
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
)

// overlayOptions adds "index=off" unless the caller chose: with the index
// on, overlayfs ties a lower dir to the first upper it was used with and
// refuses other mounts of the same layer, which a snapshotter does all the
// time.
func overlayOptions(opts []string) []string {
	for _, o := range opts {
		if o == "index" || strings.HasPrefix(o, "index=") {
			return opts
		}
	}
	if _, err := os.Stat("/sys/module/overlay/parameters/index"); err == nil {
		return append(slices.Clone(opts), "index=off")
	}
	return opts
}

// mounts returns how to mount a snapshot:
//   - no parents: a bind mount of its own dir (overlay needs a lower dir);
//   - a view of one parent: a read-only bind mount of that parent;
//   - otherwise overlayfs, parents as lowerdir (nearest first) and, for an
//     active snapshot, its own fs and work dirs as upperdir and workdir.
//
// The lowerdir option grows by about 30 bytes per layer; containerd's
// mount code shortens it by changing into the common parent directory
// (ROOT/snapshots) when it nears the page size, which makes room for a few
// hundred layers (the kernel's overlayfs allows at most 500 lower dirs).
func (s *Snapshotter) mounts(sn storage.Snapshot, _ snapshots.Info) []mount.Mount {
	if len(sn.ParentIDs) == 0 {
		return []mount.Mount{bindMount(s.upperPath(sn.ID), sn.Kind == snapshots.KindView)}
	}
	var options []string
	switch {
	case sn.Kind == snapshots.KindActive:
		options = append(options,
			fmt.Sprintf("workdir=%s", s.workPath(sn.ID)),
			fmt.Sprintf("upperdir=%s", s.upperPath(sn.ID)),
		)
	case len(sn.ParentIDs) == 1:
		return []mount.Mount{bindMount(s.upperPath(sn.ParentIDs[0]), true)}
	}
	lowers := make([]string, len(sn.ParentIDs))
	for i, id := range sn.ParentIDs {
		lowers[i] = s.upperPath(id)
	}
	options = append(options, "lowerdir="+strings.Join(lowers, ":"))
	options = append(options, s.mountOpts...)
	return []mount.Mount{{Type: "overlay", Source: "overlay", Options: options}}
}

func bindMount(dir string, readOnly bool) mount.Mount {
	mode := "rw"
	if readOnly {
		mode = "ro"
	}
	return mount.Mount{Type: "bind", Source: dir, Options: []string{mode, "rbind"}}
}
