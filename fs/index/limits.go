package index

import (
	"strings"

	"github.com/containerd/stargz-snapshotter/estargz"
)

// Limits on what one TOC entry may hold. They are the kernel's own limits,
// so no layer that unpacks on Linux exceeds them, and they are far above
// real images (paths of a few dozen components and bytes, a handful of small
// xattrs); they exist so that a hostile TOC cannot make building the index
// cost more than the TOC's size.
const (
	// maxNameLen bounds a name and a link target: PATH_MAX.
	maxNameLen = 4096
	// maxDepth bounds the components of a name. PATH_MAX allows up to 2048
	// ("a/a/..."); no real tree comes near 1024.
	maxDepth = 1024
	// maxXattrNameLen is XATTR_NAME_MAX.
	maxXattrNameLen = 255
	// maxXattrValueLen is XATTR_SIZE_MAX.
	maxXattrValueLen = 64 << 10
	// maxXattrListLen is XATTR_LIST_MAX: the names of one inode's xattrs,
	// each with its terminating NUL, as listxattr returns them.
	maxXattrListLen = 64 << 10
)

// trustedPrefix is the xattr namespace only root may set. overlayfs reads
// its own state from it in lower layers (trusted.overlay.redirect, .metacopy,
// .origin...), so a TOC's trusted.* xattrs would let an image steer overlayfs
// on the host. They are dropped; the opaque marker the index synthesizes
// from ".wh..wh..opq" is added after.
const trustedPrefix = "trusted."

// checkEntry refuses an entry beyond the limits. It looks only at sizes, so
// it runs on each entry as it is decoded, before any of it is processed.
func checkEntry(i int, e *estargz.TOCEntry) error {
	if e == nil {
		return invalid("entry %d is null", i)
	}
	if len(e.Name) > maxNameLen || len(e.LinkName) > maxNameLen {
		return invalid("entry %d has a name or link target longer than %d bytes", i, maxNameLen)
	}
	if strings.Count(e.Name, "/") >= maxDepth {
		return invalid("entry %d has a name deeper than %d components", i, maxDepth)
	}
	list := 0
	for k, v := range e.Xattrs {
		if len(k) > maxXattrNameLen || len(v) > maxXattrValueLen {
			return invalid("entry %d has an xattr name or value beyond the kernel's limits", i)
		}
		list += len(k) + 1
	}
	if list > maxXattrListLen {
		return invalid("entry %d has more xattrs than the kernel lists (%d bytes of names)", i, list)
	}
	return nil
}
