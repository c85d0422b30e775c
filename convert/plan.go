package convert

import (
	"archive/tar"
	"bytes"
	"maps"
	"time"

	"github.com/lazysnap/lazysnap/prefetchlist"
)

// The rule for a prioritized file with ranges: it is left in its place, its
// ranges in the layer's annotation, when it is at least RangedMinSize and
// its ranges cover less than RangedMaxPercent of it. A smaller file costs
// less than one round trip's worth of bytes more than its read part, so it
// goes whole into the region, which comes in one request; RangedMinSize is
// prefetchlist's, the size from which `lazyconv optimize` records ranges
// (and lazysnap's traces, fs/node's RangedMinSize). Ranges covering
// nearly all of a file save little (the prefetch reads through gaps of up to
// 256 KiB anyway) and would take the file out of the region's single stream
// and its order, so the file goes whole too.
const (
	RangedMinSize    = prefetchlist.RangedMinSize
	RangedMaxPercent = 90
)

// layerPlan says what goes before the prefetch landmark of one layer.
type layerPlan struct {
	// names are the layer's entries to put first, in access order.
	names []string
	// ranged counts the files left in place with their ranges in label,
	// the value of the layer's prefetchlist.LayerAnnotation ("" for none):
	// a list of their absolute names, in access order, each with its
	// "#@ranges" directive.
	ranged int
	label  string
	// parents are directory entries the layer lacks but needs so that estargz
	// can move names forward; each is a copy of the directory as the lower
	// layers define it, so adding it changes nothing in the root filesystem.
	parents []*tar.Header
}

// planPriorities assigns each prioritized path to the layer that provides it
// in the final root filesystem (later layers override earlier ones,
// whiteouts hide) and works out the parent directories each layer needs.
// layers[i] is nil for a layer whose entries are unknown; movable[i] tells
// whether layer i is rebuilt. A path with ranges (keyed as in paths) that
// rangedPart accepts goes into its layer's label rather than first, while
// the label has room. It returns the plans and the paths it could not
// place, with the reason.
func planPriorities(layers []*stagedLayer, movable []bool, paths []string, ranges map[string][]prefetchlist.Range) ([]layerPlan, map[string]string) {
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
			pl := &plans[n.layer]
			if rs := rangedPart(n.hdr, ranges[p]); rs != nil && pl.addRanged(name, rs) {
				continue
			}
			pl.names = append(pl.names, name)
		}
	}
	addParents(layers, plans)
	return plans, skipped
}

// rangedPart returns the ranges of the regular file hdr, clipped to its
// size, when the file is to be left in place with them (see RangedMinSize),
// or nil when it is to be placed whole. Ranges past the end of the file (a
// trace of another version of it) count for nothing; none left is no
// ranges.
func rangedPart(hdr *tar.Header, rs []prefetchlist.Range) []prefetchlist.Range {
	if len(rs) == 0 || hdr.Typeflag != tar.TypeReg || hdr.Size < RangedMinSize {
		return nil
	}
	var clipped []prefetchlist.Range
	for _, r := range rs {
		if r.Start < hdr.Size {
			clipped = append(clipped, prefetchlist.Range{Start: r.Start, End: min(r.End, hdr.Size)})
		}
	}
	clipped = prefetchlist.Normalize(clipped)
	var covered int64
	for _, r := range clipped {
		covered += r.End - r.Start
	}
	if covered == 0 || covered*100 >= hdr.Size*RangedMaxPercent {
		return nil
	}
	return clipped
}

// addRanged adds the layer entry name with its ranges to the plan's label
// and reports whether it did: not when the label would grow past what
// containerd accepts (an image whose layer carries a larger annotation
// cannot be unpacked), nor for a name the list format cannot hold.
func (pl *layerPlan) addRanged(name string, rs []prefetchlist.Range) bool {
	var b bytes.Buffer
	p := "/" + name
	if err := prefetchlist.Write(&b, nil, []string{p}, prefetchlist.WithRanges(map[string][]prefetchlist.Range{p: rs})); err != nil {
		return false
	}
	if len(prefetchlist.LayerAnnotation)+len(pl.label)+b.Len() > prefetchlist.MaxLabelSize {
		return false
	}
	pl.label += b.String()
	pl.ranged++
	return true
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
