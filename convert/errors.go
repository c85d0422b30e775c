package convert

import (
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// LayerError reports a problem with one layer, and with one entry (file) of
// it when the problem is there. Err carries the errdefs category
// (errdefs.ErrInvalidArgument for bad input, errdefs.ErrDataLoss for content
// that does not match its digest).
type LayerError struct {
	// Layer is the digest of the layer blob at fault.
	Layer v1.Hash
	// Entry is the path of the tar entry at fault, or "" for the whole layer.
	Entry string
	Err   error
}

func (e *LayerError) Error() string {
	if e.Entry == "" {
		return fmt.Sprintf("layer %s: %v", e.Layer, e.Err)
	}
	return fmt.Sprintf("layer %s: entry %q: %v", e.Layer, e.Entry, e.Err)
}

func (e *LayerError) Unwrap() error { return e.Err }

func layerErr(layer v1.Hash, entry string, err error) error {
	return &LayerError{Layer: layer, Entry: entry, Err: err}
}
