package convert

import (
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Phase is where a layer's conversion is.
type Phase string

const (
	// PhaseRead: the source layer is being read, checked and unpacked to a
	// temporary tar.
	PhaseRead Phase = "read"
	// PhaseBuild: the new layer is being compressed.
	PhaseBuild Phase = "build"
	// PhaseDone: the new layer is ready; Result says what it is.
	PhaseDone Phase = "done"
	// PhaseKept: the layer already had the wanted format and is kept as is.
	PhaseKept Phase = "kept"
)

// LayerStatus is one progress report about one layer.
type LayerStatus struct {
	// Index is the layer's position in the image, from the base up.
	Index int
	// Source is the digest of the source layer.
	Source v1.Hash
	Phase  Phase
	// Done and Total count source bytes read in PhaseRead, and bytes of
	// uncompressed tar compressed in PhaseBuild (Total 0 when unknown).
	Done, Total int64
	// Result is set in PhaseDone and PhaseKept.
	Result *LayerResult
}

// LayerResult describes a converted (or kept) layer.
type LayerResult struct {
	Source    v1.Hash
	Digest    v1.Hash
	DiffID    v1.Hash
	MediaType types.MediaType
	Size      int64
	// TOCDigest is the digest of the layer's table of contents.
	TOCDigest string
	// Prioritized is how many entries precede the prefetch landmark.
	Prioritized int
	// Ranged is how many prioritized files were left in place, their
	// ranges in the layer's prefetchlist.LayerAnnotation.
	Ranged int
}

// Progress receives progress reports. Update is called from several
// goroutines at once and must not block for long.
type Progress interface {
	Update(LayerStatus)
}

// ProgressFunc adapts a function to Progress.
type ProgressFunc func(LayerStatus)

// Update calls f(s).
func (f ProgressFunc) Update(s LayerStatus) { f(s) }

type nopProgress struct{}

func (nopProgress) Update(LayerStatus) {}
