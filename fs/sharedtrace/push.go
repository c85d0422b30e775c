package sharedtrace

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"time"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Subject finds the manifest a trace of ref is attached to: ref's own
// manifest, or for an index the manifest of platform (nil: this node's).
func Subject(ref name.Reference, platform *v1.Platform, opts ...remote.Option) (v1.Descriptor, error) {
	desc, err := remote.Get(ref, opts...)
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("reading the manifest of %s: %w", ref, err)
	}
	if !desc.MediaType.IsIndex() {
		return desc.Descriptor, nil
	}
	if platform == nil {
		platform = &v1.Platform{OS: runtime.GOOS, Architecture: runtime.GOARCH}
	}
	idx, err := desc.ImageIndex()
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("reading the index %s: %w", ref, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("reading the index %s: %w", ref, err)
	}
	for _, m := range im.Manifests {
		if m.Platform != nil && m.Platform.Satisfies(*platform) && m.MediaType.IsImage() {
			return m, nil
		}
	}
	return v1.Descriptor{}, fmt.Errorf("%s has no manifest for %s: %w", ref, platform, errdefs.ErrNotFound)
}

// Push pushes content, a trace file's bytes, to repo as an artifact
// referring to subject, and returns the artifact's manifest digest. created
// goes into its created annotation.
func Push(ctx context.Context, repo name.Repository, subject v1.Descriptor, content []byte, created time.Time, opts ...remote.Option) (v1.Hash, error) {
	a := artifact{subject: subject, artifactType: ArtifactType, blob: static.NewLayer(content, TraceMediaType), created: created}
	return a.push(ctx, repo, opts...)
}

// artifact is what Push pushes; tests push others.
type artifact struct {
	subject      v1.Descriptor
	artifactType string
	blob         v1.Layer
	created      time.Time
}

func (a artifact) push(ctx context.Context, repo name.Repository, opts ...remote.Option) (v1.Hash, error) {
	opts = append(opts, remote.WithContext(ctx))
	cfg := static.NewLayer(emptyConfig, types.OCIEmptyJSON)
	blob := a.blob
	for _, l := range []v1.Layer{cfg, blob} {
		if err := remote.WriteLayer(repo, l, opts...); err != nil {
			return v1.Hash{}, fmt.Errorf("pushing the trace to %s: %w", repo, err)
		}
	}
	raw, err := a.manifest(cfg)
	if err != nil {
		return v1.Hash{}, err
	}
	h, _, err := v1.SHA256(bytes.NewReader(raw))
	if err != nil {
		return v1.Hash{}, err
	}
	if err := remote.Put(repo.Digest(h.String()), rawManifest(raw), opts...); err != nil {
		return v1.Hash{}, fmt.Errorf("pushing the trace manifest to %s: %w", repo, err)
	}
	return h, nil
}

// manifest writes the artifact's manifest by hand: go-containerregistry's
// image mutations would give it a config file of an image.
func (a artifact) manifest(cfg v1.Layer) ([]byte, error) {
	cd, err := descriptor(cfg)
	if err != nil {
		return nil, err
	}
	cd.Data = emptyConfig
	bd, err := descriptor(a.blob)
	if err != nil {
		return nil, err
	}
	subject := a.subject
	subject.Platform, subject.Annotations, subject.URLs, subject.Data = nil, nil, nil, nil
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		ArtifactType:  a.artifactType,
		Config:        cd,
		Layers:        []v1.Descriptor{bd},
		Subject:       &subject,
		Annotations:   map[string]string{AnnotationCreated: a.created.UTC().Format(time.RFC3339Nano)},
	}
	return json.Marshal(m)
}

func descriptor(l v1.Layer) (v1.Descriptor, error) {
	d, err := l.Digest()
	if err != nil {
		return v1.Descriptor{}, err
	}
	n, err := l.Size()
	if err != nil {
		return v1.Descriptor{}, err
	}
	mt, err := l.MediaType()
	if err != nil {
		return v1.Descriptor{}, err
	}
	return v1.Descriptor{MediaType: mt, Digest: d, Size: n}, nil
}

// rawManifest is a manifest to remote.Put as it is.
type rawManifest []byte

func (m rawManifest) RawManifest() ([]byte, error)        { return m, nil }
func (m rawManifest) MediaType() (types.MediaType, error) { return types.OCIManifestSchema1, nil }
