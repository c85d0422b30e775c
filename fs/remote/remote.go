// Package remote reaches layer blobs in OCI registries and reads byte ranges
// of them with HTTP Range requests. It resolves a registry host through
// containerd's hosts.toml configuration (mirrors tried in order, plain HTTP
// where configured), authenticates with go-containerregistry's transport
// (docker config keychain, bearer tokens, redirects to blob storage), and
// retries transient failures with backoff.
//
// Transient failures (connection errors, 5xx, 429, short bodies, stalls)
// are retried; 401 (after the transport's own token refresh), 403, 404 and
// 416 are final, as errdefs.ErrUnauthenticated, ErrPermissionDenied,
// ErrNotFound and ErrInvalidArgument.
package remote

import (
	"context"
	"io"
	"sync"

	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/semaphore"
	"golang.org/x/sync/singleflight"
)

// Resolver turns an image reference and a blob digest into a Blob. It is
// safe for concurrent use. It reads each registry's hosts.toml once and keeps
// one authenticated transport per (host, repository) for its lifetime, so
// connections and bearer tokens are reused across blobs.
type Resolver struct {
	opts  options
	stats counters // summed over every blob

	mu         sync.Mutex
	hosts      map[string][]docker.RegistryHost // by registry name, from hosts.toml
	transports map[string]*endpoint             // by endpointKey
	dial       singleflight.Group               // one ping/token exchange per endpointKey at a time
	slots      map[string]*semaphore.Weighted   // requests in flight, by host:port
	noSuffix   map[string]bool                  // hosts (host:port) that do not serve a suffix range, see probeSize
}

// NewResolver returns a Resolver.
func NewResolver(opts ...Option) *Resolver {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	return &Resolver{
		opts:       o,
		slots:      map[string]*semaphore.Weighted{},
		noSuffix:   map[string]bool{},
		hosts:      map[string][]docker.RegistryHost{},
		transports: map[string]*endpoint{},
	}
}

// Resolve finds the blob d of the repository named by ref (for example
// "localhost:5000/app:v1"), trying the configured hosts in order, and learns
// its size: with one suffix Range GET that also brings the blob's last
// bytes (WithTailBytes), kept on the Blob until Blob.TakeTail, or with a
// HEAD where that GET is not answered with its range. It fails with an
// error wrapping errdefs.ErrNotFound when no host has the blob and
// errdefs.ErrUnavailable when none answers.
//
// Hosts come from hosts.toml for the ref's registry: mirrors in order, then
// the upstream (its "server", or the registry itself). A mirror that fails or
// lacks the blob is skipped. The returned error takes its category from the
// upstream's answer, and its message lists every host's. A round in which
// every host failed transiently is retried with backoff.
func (r *Resolver) Resolve(ctx context.Context, ref string, d digest.Digest) (Blob, error) {
	return r.resolve(ctx, ref, d)
}

// hostSlots returns the request slots of host (host:port). Each registry
// host has its own, so that a slow or dead registry, whose requests hold
// their slots until they time out, cannot starve the reads of another.
func (r *Resolver) hostSlots(host string) *semaphore.Weighted {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.slots[host]
	if !ok {
		s = semaphore.NewWeighted(int64(r.opts.maxConcurrency))
		r.slots[host] = s
	}
	return s
}

// servesSuffix reports whether host may serve the suffix GET of a resolve:
// it did not answer one without its range yet.
func (r *Resolver) servesSuffix(host string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return !r.noSuffix[host]
}

// noSuffixAt records that host answered a suffix GET without its range, so
// that its blobs are resolved with a HEAD from now on.
func (r *Resolver) noSuffixAt(ctx context.Context, host, answer string) {
	r.mu.Lock()
	known := r.noSuffix[host]
	r.noSuffix[host] = true
	r.mu.Unlock()
	if !known {
		r.opts.logger.InfoContext(ctx, "registry host does not serve suffix Range requests; resolving its blobs with HEAD (a layer mount then takes three round trips, not one)",
			"host", host, "answer", answer)
	}
}

// Stats returns counters summed over every blob of the resolver.
func (r *Resolver) Stats() Stats { return r.stats.snapshot() }

// Blob is a remote blob read by byte range.
type Blob interface {
	// Digest is the blob's digest.
	Digest() digest.Digest
	// Size is the blob's size in bytes.
	Size() int64
	// Fetch returns the bytes [off, off+n) of the blob as a stream. The
	// stream resumes by itself (a new Range request from where it stopped)
	// after a reset or short body, up to the retry limit, so a reader either
	// gets exactly n bytes or an error. Cancelling ctx aborts it.
	//
	// While the blob keeps its tail (see TakeTail), a range inside it is
	// served from memory with no request, and a range that ends inside it
	// is fetched only up to where the tail starts.
	Fetch(ctx context.Context, off, n int64) (io.ReadCloser, error)
	// TakeTail returns the blob's last bytes that Resolve received with its
	// size (WithTailBytes), and forgets them: later Fetches of those bytes
	// go to the registry. It returns nil when none are kept, and after the
	// first call. The caller must not modify them.
	//
	// The tail is kept for the mount only: fs/layer.ReadTOC, which reads
	// the footer and the TOC from it, takes it when it is done (also when
	// it failed) and hands it to the layer's spool with them. So a blob
	// holds at most WithTailBytes of memory while its layer is being
	// mounted and none after, and a check that the registry still has the
	// blob (a Fetch of its last byte) reaches the registry. A user of
	// Resolve that reads no TOC should call it too, or the bytes live as
	// long as the Blob.
	TakeTail() []byte
	// Stats returns this blob's counters.
	Stats() Stats
}

// Stats counts what was fetched, for metrics. Resolve's suffix GET counts
// as a request and its tail's bytes as fetched; a HEAD that learns the size
// is not counted.
type Stats struct {
	Requests     int64 // HTTP range requests sent, retries included
	BytesFetched int64 // body bytes received, including any a server ignoring Range sent before the range
	Retries      int64 // attempts reissued after a transient failure
	TailHits     int64 // Fetches served wholly or in part from the kept tail (see Blob.TakeTail)
}

// Keychain returns where the resolver takes registry credentials from
// (WithKeychain), for other requests to the same registries.
func (r *Resolver) Keychain() authn.Keychain { return r.opts.keychain }
