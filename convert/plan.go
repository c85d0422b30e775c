package convert

import (
	"archive/tar"
	"maps"
	"time"
)

// layerPlan says what goes before the prefetch landmark of one layer.
type layerPlan struct {
	// names are the layer's entries to put first, in access order.
	names []string
	// parents are directory entries the layer lacks but needs so that estargz
	// can move names forward; each is a copy of the directory as the lower
	// layers define it, so adding it changes nothing in the root filesystem.
	parents []*tar.Header
}

// planPriorities assigns each prioritized path to the layer that provides it
// in the final root filesystem (later layers override earlier ones,
// whiteouts hide) and works out the parent directories each layer needs.
// layers[i] is nil for a layer whose entries are unknown; movable[i] tells
// whether layer i is rebuilt. It returns the plans and the paths it could not
// place, with the reason.
func planPriorities(layers []*stagedLayer, movable []bool, paths []string) ([]layerPlan, map[string]string) {
	plans := make([]layerPlan, len(layers))
	skipped := make(map[string]string)
	final := newRootfs()
	for i, sl := range layers {
		if sl != nil {
			final.apply(i, sl)
		}
	}
	placed := make(map[string]bool)
	for _, p := range paths {
		name, n := final.resolve(p)
		switch {
		case n == nil || n.hdr == nil:
			skipped[p] = "not in the image"
		case !movable[n.layer]:
			skipped[p] = "in a layer kept as is"
		case !placed[name]:
			placed[name] = true
			plans[n.layer].names = append(plans[n.layer].names, name)
		}
	}
	addParents(layers, plans)
	return plans, skipped
}

// addParents fills in plans[i].parents, replaying the layers from the base
// up so that each layer sees the view of the layers below it.
func addParents(layers []*stagedLayer, plans []layerPlan) {
	lower := newRootfs()
	for i, sl := range layers {
		if sl == nil {
			continue
		}
		added := make(map[string]bool)
		for _, name := range plans[i].names {
			for _, dir := range ancestors(name) {
				if _, ok := sl.entries[dir]; ok || added[dir] {
					continue
				}
				added[dir] = true
				plans[i].parents = append(plans[i].parents, dirHeader(dir, lower.lookup(dir)))
			}
		}
		lower.apply(i, sl)
	}
}

// ancestors returns the parent directories of a clean name, outermost first:
// "usr/bin/sh" gives "usr", "usr/bin".
func ancestors(name string) []string {
	var out []string
	for i := range len(name) {
		if name[i] == '/' {
			out = append(out, name[:i])
		}
	}
	return out
}

// dirHeader returns a directory entry for name with the metadata the lower
// layers give it. A directory no lower layer lists is one the applier makes
// implicitly, as 0755 root:root; it gets that, with the Unix epoch as mtime.
func dirHeader(name string, lower *node) *tar.Header {
	h := &tar.Header{
		Typeflag: tar.TypeDir,
		Name:     name + "/",
		Mode:     0o755,
		ModTime:  time.Unix(0, 0),
		Format:   tar.FormatPAX,
	}
	if lower == nil || lower.hdr == nil || lower.hdr.Typeflag != tar.TypeDir {
		return h
	}
	l := lower.hdr
	h.Mode, h.Uid, h.Gid, h.Uname, h.Gname, h.ModTime = l.Mode, l.Uid, l.Gid, l.Uname, l.Gname, l.ModTime
	h.PAXRecords = maps.Clone(l.PAXRecords)
	return h
}
