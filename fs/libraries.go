package fs

import (
	"cmp"
	"context"
	"maps"
	"path"
	"slices"
	"strings"
	"syscall"

	"github.com/opencontainers/go-digest"

	"github.com/lazysnap/lazysnap/fs/elfdeps"
	"github.com/lazysnap/lazysnap/fs/index"
	"github.com/lazysnap/lazysnap/fs/layer"
)

// Libraries a starting program needs, fetched side by side.
//
// A dynamically linked program's loader opens its libraries one after
// another, and each first read of a library the cache lacks waits a round
// trip while the link idles: redis-server's start-up, without a list, sent
// 14 requests in a row for its libraries and theirs (make bench
// -request-log). The libraries a binary needs are written in its dynamic
// section, which the loader reads right after the headers. So when a layer
// reports the first read of a file's head (layer.WithHeadRead, which is
// how the kernel and the loader open a binary), the head is parsed
// (package elfdeps; a large binary's dynamic section, in its data segment
// past the first chunk, is fetched a moment before the loader would), each
// needed library is looked up where the loader would look for it, in the
// layers of the same image, and its first chunk is fetched at once
// (layer.FetchHeads: those of one layer together, neighbours in one
// request), which reports that library's head in turn: a program's
// libraries come in as many round trips as their dependency tree is deep,
// not one per library.

// headReadHook returns the layer option that looks at the heads of the
// ELF files read in a layer of image ref: it leaves the libraries that are
// mostly data to their reads (leaveDataToReads) and, unless that is off,
// looks for the libraries of the binaries.
func (f *FS) headReadHook(ref string) []layer.Option {
	return []layer.Option{layer.WithHeadRead(func(l *layer.Layer, id index.ID, head []byte) {
		if !elfdeps.IsELF(head) { // most files read are not: no goroutine, no read for them
			return
		}
		leaveDataToReads(l, id, head)
		if f.opts.libraries {
			f.goLibs(func() { f.fetchLibraries(ref, l, id) })
		}
	})}
}

// goLibs runs fn in a goroutine Close waits for, unless Close began.
func (f *FS) goLibs(fn func()) {
	f.libsMu.Lock()
	defer f.libsMu.Unlock()
	if !f.libsClosed {
		f.libs.Go(fn)
	}
}

// fetchLibraries fetches the first chunk of every library the binary id
// of l needs that a layer of image ref holds.
func (f *FS) fetchLibraries(ref string, l *layer.Layer, id index.ID) {
	ctx := context.Background() // each layer's fetches end when it is closed
	deps, err := elfdeps.Parse(layerFile{ctx: ctx, l: l, id: id})
	if err != nil || len(deps.Needed) == 0 {
		return // not a dynamically linked binary, or one that could not be read
	}
	layers := f.layersOf(ref)
	origin := ""
	if elfdeps.UsesOrigin(deps) {
		origin, _ = l.Index().PathOf(id)
	}
	byLayer := map[*layer.Layer][]index.ID{}
	for _, tries := range elfdeps.SearchPaths(deps, origin) {
		for _, p := range tries {
			if dl, did, ok := lookupFile(layers, p); ok {
				byLayer[dl] = append(byLayer[dl], did)
				break
			}
		}
	}
	// One call per layer: libraries stored side by side come in one request.
	for dl, ids := range byLayer {
		f.goLibs(func() {
			if err := dl.FetchHeads(ctx, ids); err != nil {
				f.opts.logger.Debug("fetching libraries ahead", "layer", dl.Digest(), "libraries", len(ids), "error", err)
			}
		})
	}
}

// layersOf returns the mounted layers of image ref, and the layers under
// them (a base layer another image mounted first carries that image's
// ref), top first as far as their chain IDs say.
func (f *FS) layersOf(ref string) []*layer.Layer {
	f.mu.Lock()
	defer f.mu.Unlock()
	byChain := map[digest.Digest]*mounted{}
	for _, m := range f.mounts {
		if m != nil && m.chain.target != "" {
			byChain[m.chain.target] = m
		}
	}
	depth := map[*mounted]int{}
	var stack func(m *mounted) int
	stack = func(m *mounted) int {
		if d, ok := depth[m]; ok {
			return d
		}
		depth[m] = 0 // a cycle of chain IDs ends here
		d := 0
		if p := byChain[m.chain.parent]; p != nil && m.chain.parent != "" {
			d = stack(p) + 1
		}
		depth[m] = d
		return d
	}
	for _, m := range f.mounts {
		if m != nil && m.ref == ref {
			stack(m)
		}
	}
	ms := slices.Collect(maps.Keys(depth))
	slices.SortFunc(ms, func(a, b *mounted) int { return cmp.Compare(depth[b], depth[a]) })
	out := make([]*layer.Layer, len(ms))
	for i, m := range ms {
		out[i] = m.layer
	}
	return out
}

// maxLinkHops bounds the symbolic links followed to find a library, as
// the kernel's 40 does for a path.
const maxLinkHops = 16

// lookupFile finds the regular file at absolute path p in the union of
// layers (top first), following symbolic links (a library's name is most
// often a link to a versioned file, and /lib a link to /usr/lib) from any
// layer to any other. Whiteouts are not looked at: a library an upper
// layer deleted is still found below, which costs a request, never a wrong
// byte.
func lookupFile(layers []*layer.Layer, p string) (*layer.Layer, index.ID, bool) {
	idxs := make([]*index.Index, len(layers))
	for i, l := range layers {
		idxs[i] = l.Index()
	}
	i, id, ok := lookupIndexes(idxs, p)
	if !ok {
		return nil, 0, false
	}
	return layers[i], id, true
}

// lookupIndexes is lookupFile over the layers' indexes: it returns which
// one holds the file.
func lookupIndexes(idxs []*index.Index, p string) (int, index.ID, bool) {
	for range maxLinkHops {
		next := ""
		for i, x := range idxs {
			id, link, found := walk(x, p)
			if found {
				return i, id, true
			}
			if link != "" {
				next = link
				break
			}
		}
		if next == "" {
			return 0, 0, false
		}
		p = next
	}
	return 0, 0, false
}

// walk looks absolute path p up in x: the regular file it names, or, when
// one of its components is a symbolic link, the path with the link
// resolved (to look up again in every layer).
func walk(x *index.Index, p string) (id index.ID, link string, found bool) {
	parts := strings.Split(strings.Trim(path.Clean(p), "/"), "/")
	cur := index.Root
	for i, name := range parts {
		child, ok := x.Lookup(cur, name)
		if !ok {
			return 0, "", false
		}
		switch x.Mode(child) & syscall.S_IFMT {
		case syscall.S_IFLNK:
			target, _ := x.Readlink(child)
			if !strings.HasPrefix(target, "/") {
				target = path.Join("/", path.Join(parts[:i]...), target)
			}
			return 0, path.Join(append([]string{target}, parts[i+1:]...)...), false
		case syscall.S_IFDIR:
			cur = child
		case syscall.S_IFREG:
			return child, "", i == len(parts)-1
		default:
			return 0, "", false
		}
	}
	return 0, "", false
}

// layerFile reads a file of a layer, fetching what the cache lacks: a
// large binary's dynamic section is in its data segment, past the first
// chunk (libnode.so's 48 MB, cc1's 30), and the loader reads it next
// anyway.
type layerFile struct {
	ctx context.Context
	l   *layer.Layer
	id  index.ID
}

func (c layerFile) ReadAt(p []byte, off int64) (int, error) {
	return c.l.ReadAt(c.ctx, c.id, p, off)
}
