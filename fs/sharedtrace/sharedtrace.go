// Package sharedtrace shares an image's first-open trace (package fs/trace)
// through the image's own repository, as an OCI 1.1 artifact whose subject
// is the image's platform manifest: one node pushes what it learnt (Push),
// and the others find it when they mount a layer of that image (Finder).
//
// A trace only orders prefetches: every byte a node fetches by it is still
// verified against the layer's TOC. So a hostile trace can waste bytes, not
// plant any; this package bounds even that (size cap, digest check, a trace
// that does not read back clean is ignored whole).
package sharedtrace

import (
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The artifact's media types: the manifest's artifactType, and its one
// layer, the trace file's bytes as `lazysnap trace export` writes them.
const (
	ArtifactType                   = "application/vnd.lazysnap.trace.v1"
	TraceMediaType types.MediaType = "application/vnd.lazysnap.trace.v1+text"
)

// AnnotationCreated is the annotation telling when a trace was pushed
// (RFC 3339); of several, the newest wins.
const AnnotationCreated = "org.opencontainers.image.created"

// emptyConfig is the OCI empty descriptor's content, the config of an
// artifact that has none.
var emptyConfig = []byte("{}")

// created reads the created annotation; a missing or bad one is the zero
// time, older than any.
func created(annotations map[string]string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, annotations[AnnotationCreated])
	if err != nil {
		return time.Time{}
	}
	return t
}
