package convert

import (
	"archive/tar"
	"path"
	"strings"
)

const (
	whiteoutPrefix = ".wh."
	opaqueWhiteout = ".wh..wh..opq"
	// maxSymlinkHops bounds symlink resolution, as Linux's ELOOP does.
	maxSymlinkHops = 40
)

// node is one path of a merged root filesystem view.
type node struct {
	hdr      *tar.Header // nil for a directory no layer lists (made implicitly)
	layer    int         // index of the layer providing hdr, -1 if implicit
	children map[string]*node
}

func newDir() *node { return &node{layer: -1, children: make(map[string]*node)} }

// rootfs is the root filesystem that layers applied in order produce,
// as far as names, types and directory metadata go.
type rootfs struct{ root *node }

func newRootfs() *rootfs { return &rootfs{root: newDir()} }

// apply lays one layer over the view: first its whiteouts hide what lower
// layers provide, then its entries override.
func (fs *rootfs) apply(layer int, sl *stagedLayer) {
	for _, name := range sl.order {
		dir, base := path.Split(name)
		switch {
		case base == opaqueWhiteout:
			if d := fs.lookup(strings.TrimSuffix(dir, "/")); d != nil && d.children != nil {
				clear(d.children)
			}
		case strings.HasPrefix(base, whiteoutPrefix):
			if d := fs.lookup(strings.TrimSuffix(dir, "/")); d != nil && d.children != nil {
				delete(d.children, strings.TrimPrefix(base, whiteoutPrefix))
			}
		}
	}
	for _, name := range sl.order {
		if base := path.Base(name); strings.HasPrefix(base, whiteoutPrefix) {
			continue
		}
		fs.put(name, layer, sl.entries[name])
	}
}

// lookup returns the node at a clean name, without following symlinks.
func (fs *rootfs) lookup(name string) *node {
	n := fs.root
	if name == "" {
		return n
	}
	for _, c := range strings.Split(name, "/") {
		if n.children == nil {
			return nil
		}
		if n = n.children[c]; n == nil {
			return nil
		}
	}
	return n
}

// put sets the entry at name, creating missing parents as the applier does.
func (fs *rootfs) put(name string, layer int, hdr *tar.Header) {
	if name == "" {
		fs.root.hdr, fs.root.layer = hdr, layer
		return
	}
	parts := strings.Split(name, "/")
	n := fs.root
	for _, c := range parts[:len(parts)-1] {
		child := n.children[c]
		if child == nil || child.children == nil {
			child = newDir()
			n.children[c] = child
		}
		n = child
	}
	last := parts[len(parts)-1]
	old := n.children[last]
	nn := &node{hdr: hdr, layer: layer}
	if hdr.Typeflag == tar.TypeDir {
		nn.children = make(map[string]*node)
		if old != nil && old.children != nil {
			nn.children = old.children // directories merge
		}
	}
	n.children[last] = nn
}

// resolve follows p through the view, symlinks included (the final one too,
// since the file read is the link's target), and returns the clean name of
// what it reaches and its node, or nil if nothing is there.
func (fs *rootfs) resolve(p string) (string, *node) {
	todo := splitPath(p)
	var done []string
	n := fs.root
	for hops := 0; len(todo) > 0; {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case ".":
			continue
		case "..":
			if len(done) > 0 {
				done = done[:len(done)-1]
			}
			n = fs.lookup(strings.Join(done, "/"))
			continue
		}
		if n == nil || n.children == nil {
			return "", nil
		}
		child := n.children[c]
		if child == nil {
			return "", nil
		}
		if child.hdr != nil && child.hdr.Typeflag == tar.TypeSymlink {
			if hops++; hops > maxSymlinkHops {
				return "", nil
			}
			target := child.hdr.Linkname
			if path.IsAbs(target) {
				done, n = nil, fs.root
			}
			todo = append(splitPath(target), todo...)
			continue
		}
		done = append(done, c)
		n = child
	}
	return strings.Join(done, "/"), n
}

func splitPath(p string) []string {
	var out []string
	for _, c := range strings.Split(p, "/") {
		if c != "" {
			out = append(out, c)
		}
	}
	return out
}
