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
		hosts:      map[string][]docker.RegistryHost{},
		transports: map[string]*endpoint{},
	}
}

// Resolve finds the blob d of the repository named by ref (for example
// "localhost:5000/app:v1"), trying the configured hosts in order, and learns
// its size. It fails with an error wrapping errdefs.ErrNotFound when no host
// has the blob and errdefs.ErrUnavailable when none answers.
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
	Fetch(ctx context.Context, off, n int64) (io.ReadCloser, error)
	// Stats returns this blob's counters.
	Stats() Stats
}

// Stats counts what was fetched, for metrics. Resolve's size probes are not
// counted.
type Stats struct {
	Requests     int64 // HTTP range requests sent, retries included
	BytesFetched int64 // body bytes received, including any a server ignoring Range sent before the range
	Retries      int64 // attempts reissued after a transient failure
}
