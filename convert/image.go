package convert

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// fileLayer is a converted layer blob held in a temporary file.
type fileLayer struct{ b *built }

func (l *fileLayer) Digest() (v1.Hash, error)             { return l.b.digest, nil }
func (l *fileLayer) DiffID() (v1.Hash, error)             { return l.b.diffID, nil }
func (l *fileLayer) Size() (int64, error)                 { return l.b.size, nil }
func (l *fileLayer) MediaType() (types.MediaType, error)  { return l.b.mediaType, nil }
func (l *fileLayer) Compressed() (io.ReadCloser, error)   { return os.Open(l.b.path) }
func (l *fileLayer) Uncompressed() (io.ReadCloser, error) { return uncompressed(l) }

func uncompressed(l *fileLayer) (io.ReadCloser, error) {
	f, err := os.Open(l.b.path)
	if err != nil {
		return nil, err
	}
	r, err := decompress(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return &readCloser{Reader: r, close: func() error { r.Close(); return f.Close() }}, nil
}

type readCloser struct {
	io.Reader
	close func() error
}

func (r *readCloser) Close() error { return r.close() }

// image is a converted image: a new manifest and config over the layers.
type image struct {
	manifest  []byte
	config    []byte
	mediaType types.MediaType
	layers    map[v1.Hash]partial.CompressedLayer
}

var _ partial.CompressedImageCore = (*image)(nil)

func (i *image) RawConfigFile() ([]byte, error)      { return i.config, nil }
func (i *image) MediaType() (types.MediaType, error) { return i.mediaType, nil }
func (i *image) RawManifest() ([]byte, error)        { return i.manifest, nil }
func (i *image) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	if l, ok := i.layers[h]; ok {
		return l, nil
	}
	if cfg, err := partial.ConfigLayer(i); err == nil {
		if d, _ := cfg.Digest(); d == h {
			return cfg, nil
		}
	}
	return nil, fmt.Errorf("blob %s not in the image", h)
}

// withDiffIDs returns the config JSON with rootfs.diff_ids replaced and
// every other field kept as the source has it (v1.ConfigFile would drop
// fields it does not know).
func withDiffIDs(raw []byte, diffIDs []v1.Hash) ([]byte, error) {
	var cfg map[string]json.RawMessage
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return nil, fmt.Errorf("parsing the image config: %w", err)
	}
	var rootfs map[string]json.RawMessage
	if r, ok := cfg["rootfs"]; ok {
		if err := json.Unmarshal(r, &rootfs); err != nil {
			return nil, fmt.Errorf("parsing the image config's rootfs: %w", err)
		}
	}
	if rootfs == nil {
		rootfs = map[string]json.RawMessage{"type": json.RawMessage(`"layers"`)}
	}
	ids, err := json.Marshal(diffIDs)
	if err != nil {
		return nil, err
	}
	rootfs["diff_ids"] = ids
	if cfg["rootfs"], err = json.Marshal(rootfs); err != nil {
		return nil, err
	}
	return json.Marshal(cfg)
}
