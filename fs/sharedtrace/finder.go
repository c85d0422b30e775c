package sharedtrace

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/lazysnap/lazysnap/fs/trace"
)

// maxManifestBytes caps an artifact manifest: ours is a few hundred bytes.
const maxManifestBytes = 64 << 10

// Finder finds the traces other nodes shared for an image. It asks the
// registry once per image and manifest at a time, and remembers the answer
// for a while, so that the layers of an image mounting together cost one
// lookup. It is safe for concurrent use.
type Finder struct {
	opts options

	mu      sync.Mutex
	lookups map[string]*Lookup // by image and manifest digest
}

// Lookup is one lookup, pending or answered.
type Lookup struct {
	done   chan struct{}
	parsed trace.Parsed
	found  bool
	at     time.Time // answered at
	wait   time.Duration
}

// NewFinder returns a Finder.
func NewFinder(opts ...Option) *Finder {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	return &Finder{opts: o, lookups: map[string]*Lookup{}}
}

// Start starts looking up the newest trace shared for image (a reference,
// from a layer's image-ref label) whose subject is manifest (its
// manifest-digest label; "" uses image's own digest if it has one), or
// joins the lookup already pending or answered lately. It never blocks.
func (f *Finder) Start(image, manifest string) *Lookup {
	key := image + "\x00" + manifest
	f.mu.Lock()
	defer f.mu.Unlock()
	f.forgetOld()
	if l := f.lookups[key]; l != nil {
		return l
	}
	l := &Lookup{done: make(chan struct{}), wait: f.opts.wait}
	f.lookups[key] = l
	go f.run(l, image, manifest)
	return l
}

// forgetOld drops the answers kept long enough. Called with f.mu held.
func (f *Finder) forgetOld() {
	for k, l := range f.lookups {
		select {
		case <-l.done:
			keep := f.opts.keepNone
			if l.found {
				keep = f.opts.keepFound
			}
			if time.Since(l.at) >= keep {
				delete(f.lookups, k)
			}
		default: // pending
		}
	}
}

func (f *Finder) run(l *Lookup, image, manifest string) {
	ctx, cancel := context.WithTimeout(context.Background(), f.opts.timeout)
	defer cancel()
	p, err := f.find(ctx, image, manifest)
	switch {
	case errors.Is(err, errdefs.ErrNotFound):
		f.opts.logger.Debug("no shared trace in the registry", "image", image, "reason", err)
	case err != nil:
		f.opts.logger.Warn("shared trace not used", "image", image, "error", err)
	default:
		l.parsed, l.found = p, len(p.Paths) > 0
		f.opts.logger.Info("found a shared trace in the registry", "image", image, "files", len(p.Paths))
	}
	l.at = time.Now()
	close(l.done)
}

// Wait returns the trace found, if any, waiting for the answer at most
// until ctx is done or the Finder's WithWait has passed.
func (l *Lookup) Wait(ctx context.Context) (trace.Parsed, bool) {
	t := time.NewTimer(l.wait)
	defer t.Stop()
	select {
	case <-l.done:
		return l.parsed, l.found
	case <-t.C:
	case <-ctx.Done():
	}
	return trace.Parsed{}, false
}

func (f *Finder) remoteOpts(ctx context.Context) []remote.Option {
	return []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(f.opts.keychain),
		remote.WithTransport(f.opts.transport)}
}

// find asks the registry for the newest trace of image's manifest. It
// fails with errdefs.ErrNotFound when there is none.
func (f *Finder) find(ctx context.Context, image, manifest string) (trace.Parsed, error) {
	subj, err := subjectDigest(image, manifest, f.opts.nameOpts)
	if err != nil {
		return trace.Parsed{}, err
	}
	desc, err := f.newest(ctx, subj)
	if err != nil {
		return trace.Parsed{}, err
	}
	content, err := f.fetchTrace(ctx, subj.Context().Digest(desc.Digest.String()))
	if err != nil {
		return trace.Parsed{}, fmt.Errorf("trace %s: %w", desc.Digest, err)
	}
	p, err := trace.Read(bytes.NewReader(content))
	if err == nil && len(p.Warnings) > 0 {
		// lazysnap writes traces that read back clean: this one was
		// made otherwise, and none of it is trusted.
		err = fmt.Errorf("%d bad lines, the first: %s: %w", len(p.Warnings), p.Warnings[0], errdefs.ErrDataLoss)
	}
	if err != nil {
		return trace.Parsed{}, fmt.Errorf("trace %s: %w", desc.Digest, err)
	}
	return p, nil
}

// subjectDigest names the manifest a trace of image refers to.
func subjectDigest(image, manifest string, opts []name.Option) (name.Digest, error) {
	ref, err := name.ParseReference(image, opts...)
	if err != nil {
		return name.Digest{}, fmt.Errorf("image %q: %v: %w", image, err, errdefs.ErrInvalidArgument)
	}
	if manifest == "" {
		if d, ok := ref.(name.Digest); ok {
			return d, nil
		}
		return name.Digest{}, fmt.Errorf("no manifest digest for %s: %w", image, errdefs.ErrNotFound)
	}
	if _, err := v1.NewHash(manifest); err != nil {
		return name.Digest{}, fmt.Errorf("manifest digest %q: %v: %w", manifest, err, errdefs.ErrInvalidArgument)
	}
	return ref.Context().Digest(manifest), nil
}

// newest returns the descriptor of the newest trace referring to subj.
func (f *Finder) newest(ctx context.Context, subj name.Digest) (v1.Descriptor, error) {
	idx, err := remote.Referrers(subj, append(f.remoteOpts(ctx), remote.WithFilter("artifactType", ArtifactType))...)
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("listing the referrers of %s: %w", subj, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("listing the referrers of %s: %w", subj, err)
	}
	var best *v1.Descriptor
	for i, d := range im.Manifests {
		if d.ArtifactType != ArtifactType {
			continue
		}
		if best == nil || created(d.Annotations).After(created(best.Annotations)) {
			best = &im.Manifests[i]
		}
	}
	if best == nil {
		return v1.Descriptor{}, fmt.Errorf("no trace refers to %s: %w", subj, errdefs.ErrNotFound)
	}
	return *best, nil
}

// fetchTrace fetches the artifact's manifest, checks it is a trace of
// ours, and returns its one layer's bytes, verified and at most maxBytes.
func (f *Finder) fetchTrace(ctx context.Context, ref name.Digest) ([]byte, error) {
	desc, err := remote.Get(ref, f.remoteOpts(ctx)...)
	if err != nil {
		return nil, err
	}
	if len(desc.Manifest) > maxManifestBytes {
		return nil, fmt.Errorf("manifest of %d bytes: %w", len(desc.Manifest), errdefs.ErrInvalidArgument)
	}
	m, err := v1.ParseManifest(bytes.NewReader(desc.Manifest))
	if err != nil {
		return nil, fmt.Errorf("manifest: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	if m.ArtifactType != ArtifactType || len(m.Layers) != 1 || m.Layers[0].MediaType != TraceMediaType {
		return nil, fmt.Errorf("not a lazysnap trace (artifactType %q, %d layers): %w", m.ArtifactType, len(m.Layers), errdefs.ErrInvalidArgument)
	}
	return f.fetchBlob(ctx, ref.Context(), m.Layers[0])
}

// fetchBlob reads blob d of repo, at most maxBytes, and checks its digest
// itself rather than trusting the transport to.
func (f *Finder) fetchBlob(ctx context.Context, repo name.Repository, d v1.Descriptor) ([]byte, error) {
	if d.Size > f.opts.maxBytes || d.Digest.Algorithm != "sha256" {
		return nil, fmt.Errorf("blob %s of %d bytes (at most %d, sha256): %w", d.Digest, d.Size, f.opts.maxBytes, errdefs.ErrInvalidArgument)
	}
	l, err := remote.Layer(repo.Digest(d.Digest.String()), f.remoteOpts(ctx)...)
	if err != nil {
		return nil, err
	}
	rc, err := l.Compressed()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, f.opts.maxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading blob %s: %w", d.Digest, err)
	}
	if int64(len(b)) > f.opts.maxBytes {
		return nil, fmt.Errorf("blob %s is over %d bytes: %w", d.Digest, f.opts.maxBytes, errdefs.ErrInvalidArgument)
	}
	sum := sha256.Sum256(b)
	if hex.EncodeToString(sum[:]) != d.Digest.Hex {
		return nil, fmt.Errorf("blob %s has digest sha256:%x: %w", d.Digest, sum, errdefs.ErrDataLoss)
	}
	return b, nil
}
