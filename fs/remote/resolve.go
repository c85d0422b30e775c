package remote

import (
	"context"
	"errors"
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
		host:   c.host.Host,
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

// probeSize learns the blob's size. With WithTailBytes it asks for the
// blob's tail with a suffix Range GET, whose Content-Range tells the size
// and whose body becomes b's tail: the footer and TOC a mount reads next
// then cost no request of their own (see probeTail). Where that GET tells
// no size (416, a 200 without Content-Length, no or a malformed
// Content-Range, a transient failure) it asks again with a HEAD, or, where
// HEAD is not supported, with a one-byte Range GET and its Content-Range.
// An answer a HEAD would only repeat (the blob is missing, access or a
// redirect is refused) is final.
//
// A host that answers the suffix GET without its range, other than with a
// transient failure (a 200 of a blob larger than the tail, 416, another
// range), is asked with a HEAD alone from then on: each suffix GET would
// cost it a request more, or a connection cut in a body, for nothing. (A
// pull-through cache mirror answers 200 while it fetches a blob itself;
// it then loses the tail until the daemon restarts: a mount costs the
// three round trips it did before the tail.)
func (b *blob) probeSize(ctx context.Context) (int64, error) {
	if n := b.r.opts.tailBytes; n > 0 && b.r.servesSuffix(b.host) {
		size, kept, err := b.probeTail(ctx, n)
		switch {
		case err == nil && !kept && size > 0:
			b.r.noSuffixAt(ctx, b.host, "the whole blob (200) or another range")
			return size, nil
		case err == nil || finalProbeError(ctx, err):
			return size, err
		case !retryable(err):
			b.r.noSuffixAt(ctx, b.host, err.Error())
		default:
			b.r.opts.logger.DebugContext(ctx, "the suffix Range GET did not tell the blob's size; asking with HEAD",
				"blob", b.where, "error", err)
		}
	}
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

// finalProbeError reports whether err, from the suffix GET of probeTail, is
// one a HEAD would only repeat: ctx ended, the blob is missing, or access
// (or a redirect) is refused.
func finalProbeError(ctx context.Context, err error) bool {
	return ctx.Err() != nil || errdefs.IsNotFound(err) || errdefs.IsUnauthorized(err) ||
		errdefs.IsPermissionDenied(err)
}

// probeTail learns b's size with a GET of its last n bytes ("bytes=-n",
// RFC 9110: the whole blob when it is smaller), sent and counted like the
// Range requests of Fetch (same client, redirect policy, host slots,
// stall timeout and stats), and keeps the bytes as b's tail. A body that
// breaks after the headers costs only the tail: the size stands. A
// server ignoring Range (200, the whole blob) tells the size with
// Content-Length, and its body is read only when it is no longer than n:
// a large one is closed unread.
//
// kept reports whether the answer held the range (or the whole blob no
// larger than n), whether or not its body then arrived whole.
func (b *blob) probeTail(ctx context.Context, n int64) (size int64, kept bool, err error) {
	a, err := b.start(ctx, fmt.Sprintf("bytes=-%d", n), func(a *attempt, resp *http.Response) error {
		var err error
		size, a.left, err = acceptTail(resp, n)
		return err
	})
	if err != nil {
		return 0, false, err
	}
	defer a.close()
	if a.left == 0 {
		return size, false, nil
	}
	tail := make([]byte, a.left)
	for got := 0; got < len(tail); {
		m, err := a.read(tail[got:])
		got += m
		if err != nil && (got < len(tail) || !errors.Is(err, io.EOF)) {
			if ctx.Err() != nil {
				return 0, false, ctx.Err()
			}
			b.r.opts.logger.DebugContext(ctx, "the blob's tail did not arrive whole; the size stands", "blob", b.where, "error", err)
			return size, true, nil
		}
	}
	b.tail.Store(&tail)
	return size, true, nil
}

// acceptTail checks the answer to a GET of the last n bytes of a blob and
// returns the blob's size and how many bytes of the body to keep as its
// tail: all of a range that ends the blob and is as long as asked (n, or
// the whole blob when smaller); the whole body of a 200 (a server ignoring
// Range) when it is no longer than n; else none. The size of a
// Content-Range is the blob's whatever its range, so a range other than
// the one asked for (a server capping or misreading it) still tells the
// size; its body is not read.
func acceptTail(resp *http.Response, n int64) (size, keep int64, err error) {
	switch {
	case resp.StatusCode == http.StatusPartialContent,
		resp.StatusCode == http.StatusOK && resp.Header.Get("Content-Range") != "": // a P2P proxy's 200, see accept
		h := resp.Header.Get("Content-Range")
		cr, err := parseContentRange(h)
		if err != nil {
			return 0, 0, err
		}
		if cr.size < 0 || cr.last >= cr.size {
			return 0, 0, fmt.Errorf("%w: Content-Range %q tells no size", errdefs.ErrFailedPrecondition, h)
		}
		want := min(n, cr.size)
		if cr.last != cr.size-1 || cr.last-cr.first+1 != want || (resp.ContentLength >= 0 && resp.ContentLength != want) {
			return cr.size, 0, nil
		}
		return cr.size, want, nil
	case resp.StatusCode == http.StatusOK:
		switch {
		case resp.ContentLength < 0:
			return 0, 0, fmt.Errorf("%w: 200 without Content-Length", errdefs.ErrFailedPrecondition)
		case resp.ContentLength <= n:
			return resp.ContentLength, resp.ContentLength, nil
		default:
			return resp.ContentLength, 0, nil
		}
	default:
		return 0, 0, fmt.Errorf("GET bytes=-%d: %w", n, statusError(resp))
	}
}
