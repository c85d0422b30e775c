package remote

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/opencontainers/go-digest"
)

// target is what Resolve looks for.
type target struct {
	repo     name.Repository
	registry string // as hosts.toml names it
	digest   digest.Digest
}

func (t target) String() string { return fmt.Sprintf("blob %s of %s", t.digest, t.repo.Name()) }

func (r *Resolver) resolve(ctx context.Context, ref string, d digest.Digest) (Blob, error) {
	t, err := parseTarget(ref, d)
	if err != nil {
		return nil, err
	}
	cands, err := r.candidates(ctx, t.registry)
	if err != nil {
		return nil, fmt.Errorf("resolving %s: %w", t, err)
	}
	for failures := 0; ; failures++ {
		b, errs := r.resolveRound(ctx, t, cands)
		if b != nil {
			return b, nil
		}
		last := errs[len(errs)-1]
		if ctx.Err() != nil || !retryable(last) || failures >= r.opts.maxRetries {
			return nil, resolveError(t, errs)
		}
		if err := sleep(ctx, r.opts.backoff(failures+1)); err != nil {
			return nil, fmt.Errorf("resolving %s: %w", t, err)
		}
	}
}

func parseTarget(ref string, d digest.Digest) (target, error) {
	if err := d.Validate(); err != nil {
		return target{}, fmt.Errorf("resolving blob %q of %s: %w: %w", d, ref, errdefs.ErrInvalidArgument, err)
	}
	parsed, err := name.ParseReference(ref)
	if err != nil {
		return target{}, fmt.Errorf("resolving blob %s of %q: %w: %w", d, ref, errdefs.ErrInvalidArgument, err)
	}
	repo := parsed.Context()
	return target{repo: repo, registry: hostsKey(repo.Registry), digest: d}, nil
}

// resolveRound tries every candidate once, in order. It returns the first
// blob found, or one error per candidate.
func (r *Resolver) resolveRound(ctx context.Context, t target, cands []candidate) (*blob, []error) {
	var errs []error
	for _, c := range cands {
		b, err := r.resolveAt(ctx, t, c)
		if err == nil {
			return b, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
		r.opts.logger.DebugContext(ctx, "blob not resolved at host, trying the next", "error", err)
	}
	return nil, errs
}

func (r *Resolver) resolveAt(ctx context.Context, t target, c candidate) (*blob, error) {
	e, err := r.endpoint(ctx, t.repo, c)
	if err != nil {
		return nil, err
	}
	b := &blob{
		r:      r,
		client: e.client,
		slots:  r.hostSlots(c.host.Host),
		url:    blobURL(c.host, t.registry, t.repo.RepositoryStr(), t.digest.String()),
		digest: t.digest,
		where:  fmt.Sprintf("%s at %s", t, e.name),
	}
	b.stats.parent = &r.stats
	if b.size, err = b.probeSize(ctx); err != nil {
		return nil, fmt.Errorf("host %s: %w", e.name, err)
	}
	return b, nil
}

// resolveError reports every host's failure; its category is the last
// host's, the upstream's, whose answer is authoritative.
func resolveError(t target, errs []error) error {
	last := errs[len(errs)-1]
	if len(errs) == 1 {
		return fmt.Errorf("resolving %s: %w", t, last)
	}
	others := make([]string, len(errs)-1)
	for i, err := range errs[:len(errs)-1] {
		others[i] = err.Error()
	}
	return fmt.Errorf("resolving %s: %w (after mirrors failed: %s)", t, last, strings.Join(others, "; "))
}

// probeSize learns the blob's size with a HEAD, or, where HEAD is not
// supported, with a one-byte Range GET and its Content-Range.
func (b *blob) probeSize(ctx context.Context) (int64, error) {
	resp, err := b.probe(ctx, http.MethodHead)
	if err != nil {
		return 0, err
	}
	switch {
	case resp.StatusCode == http.StatusOK && resp.ContentLength >= 0:
		return resp.ContentLength, nil
	case resp.StatusCode == http.StatusOK, resp.StatusCode == http.StatusMethodNotAllowed,
		resp.StatusCode == http.StatusNotImplemented:
		return b.probeSizeByRange(ctx)
	default:
		return 0, fmt.Errorf("HEAD: %w", statusError(resp))
	}
}

func (b *blob) probeSizeByRange(ctx context.Context) (int64, error) {
	resp, err := b.probe(ctx, http.MethodGet)
	if err != nil {
		return 0, err
	}
	switch resp.StatusCode {
	case http.StatusPartialContent:
		cr, err := parseContentRange(resp.Header.Get("Content-Range"))
		if err != nil {
			return 0, err
		}
		if cr.size < 0 {
			return 0, fmt.Errorf("%w: Content-Range %q has no size", errdefs.ErrFailedPrecondition, resp.Header.Get("Content-Range"))
		}
		return cr.size, nil
	case http.StatusOK:
		if resp.ContentLength < 0 {
			return 0, fmt.Errorf("%w: no Content-Length", errdefs.ErrFailedPrecondition)
		}
		return resp.ContentLength, nil
	default:
		return 0, fmt.Errorf("GET bytes=0-0: %w", statusError(resp))
	}
}

// probe sends a header-only request (a HEAD, or a GET of the first byte)
// holding a concurrency slot; the stall timeout bounds the whole exchange.
// The response's body is already consumed.
func (b *blob) probe(ctx context.Context, method string) (*http.Response, error) {
	if err := b.slots.Acquire(ctx, 1); err != nil {
		return nil, err
	}
	defer b.slots.Release(1)
	pctx, cancel := context.WithTimeoutCause(ctx, b.r.opts.stallTimeout, errStalled)
	defer cancel()
	req, err := http.NewRequestWithContext(pctx, method, b.url, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err)
	}
	if method == http.MethodGet {
		req.Header.Set("Range", "bytes=0-0")
	}
	resp, err := b.client.Do(req)
	if err != nil {
		return nil, attemptError(ctx, pctx, err)
	}
	// Only the headers matter. Draining a small body lets the connection be
	// reused; a large one (a server ignoring Range) is cut off.
	_, _ = io.CopyN(io.Discard, resp.Body, 4096)
	resp.Body.Close()
	resp.Body = http.NoBody
	return resp, nil
}
