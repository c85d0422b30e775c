package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/containerd/errdefs"
)

// attempt is one Range GET whose body is being read. It holds a concurrency
// slot from before the request is sent until it is closed.
type attempt struct {
	b      *blob
	parent context.Context // the caller's
	ctx    context.Context // the attempt's own, cancelled on a stall
	cancel context.CancelCauseFunc
	stall  *time.Timer // armed only while waiting for the network
	body   io.ReadCloser
	skip   int64 // bytes to drop first: the server ignored Range
	left   int64 // bytes of the wanted range this response still holds
	closed bool
}

// send starts an attempt at bytes [off, off+n) of b.
func (b *blob) send(ctx context.Context, off, n int64) (*attempt, error) {
	return b.start(ctx, fmt.Sprintf("bytes=%d-%d", off, off+n-1), func(a *attempt, resp *http.Response) error {
		return a.accept(resp, off, n)
	})
}

// start sends a GET of b with the Range header rng, holding one of the
// host's slots, counts it, and has accept check the response and set what
// of its body the attempt reads.
func (b *blob) start(ctx context.Context, rng string, accept func(*attempt, *http.Response) error) (*attempt, error) {
	if err := b.slots.Acquire(ctx, 1); err != nil {
		return nil, err
	}
	actx, cancel := context.WithCancelCause(ctx)
	a := &attempt{b: b, parent: ctx, ctx: actx, cancel: cancel}
	a.stall = time.AfterFunc(b.r.opts.stallTimeout, func() { cancel(errStalled) })
	req, err := http.NewRequestWithContext(actx, http.MethodGet, b.url, nil)
	if err != nil {
		a.close()
		return nil, fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err)
	}
	req.Header.Set("Range", rng)
	b.stats.request()
	resp, err := b.client.Do(req)
	a.stall.Stop()
	if err != nil {
		a.close()
		return nil, attemptError(ctx, actx, err)
	}
	a.body = resp.Body
	if err := accept(a, resp); err != nil {
		a.close()
		return nil, err
	}
	return a, nil
}

// acceptRange checks that the Content-Range of resp starts at off and lies
// within [off, off+n) of the blob.
func (a *attempt) acceptRange(resp *http.Response, off, n int64) error {
	h := resp.Header.Get("Content-Range")
	cr, err := parseContentRange(h)
	if err != nil {
		return err
	}
	if cr.first != off || cr.last > off+n-1 || (cr.size >= 0 && cr.size != a.b.size) {
		return fmt.Errorf("%w: Content-Range %q for bytes=%d-%d of %d", errdefs.ErrFailedPrecondition, h, off, off+n-1, a.b.size)
	}
	a.left = cr.last - cr.first + 1
	return nil
}

// accept checks that resp carries bytes [off, off+n). A 200 to a ranged
// request means the server ignored Range: the attempt then drops the first
// off bytes of the full body rather than failing, since a retry would get
// the same answer; the waste shows in BytesFetched and is logged once per
// blob.
func (a *attempt) accept(resp *http.Response, off, n int64) error {
	switch {
	case resp.StatusCode == http.StatusPartialContent:
		return a.acceptRange(resp, off, n)
	case resp.StatusCode == http.StatusOK && resp.Header.Get("Content-Range") != "":
		// Some P2P proxies (Dragonfly's dfdaemon) answer a Range request
		// with 200 and the range's Content-Range: the body is the range.
		return a.acceptRange(resp, off, n)
	case resp.StatusCode == http.StatusOK:
		if resp.ContentLength >= 0 && resp.ContentLength != a.b.size {
			return fmt.Errorf("%w: full body of %d bytes, blob has %d", errdefs.ErrFailedPrecondition, resp.ContentLength, a.b.size)
		}
		if off > 0 || n < a.b.size {
			a.b.rangeIgnored.Do(func() {
				a.b.r.opts.logger.WarnContext(a.parent, "registry ignores Range requests; reading whole blobs", "blob", a.b.where)
			})
		}
		a.skip, a.left = off, n
		return nil
	default:
		return fmt.Errorf("GET bytes=%d-%d: %w", off, off+n-1, statusError(resp))
	}
}

// read reads the wanted bytes. It returns io.EOF once the response holds no
// more of them, and a classified error if the transfer broke.
func (a *attempt) read(p []byte) (int, error) {
	if err := a.discard(); err != nil {
		return 0, err
	}
	if a.left == 0 {
		return 0, io.EOF
	}
	n, err := a.timedRead(p[:min(int64(len(p)), a.left)])
	a.left -= int64(n)
	return n, err
}

// discard drops the skip bytes a server ignoring Range sent first.
func (a *attempt) discard() error {
	if a.skip == 0 {
		return nil
	}
	buf := make([]byte, min(a.skip, 64<<10))
	for a.skip > 0 {
		n, err := a.timedRead(buf[:min(a.skip, int64(len(buf)))])
		a.skip -= int64(n)
		if err != nil {
			return err
		}
	}
	return nil
}

// timedRead reads from the body with the stall timer armed, so that a read
// receiving nothing for the stall timeout fails instead of hanging.
func (a *attempt) timedRead(p []byte) (int, error) {
	a.stall.Reset(a.b.r.opts.stallTimeout)
	n, err := a.body.Read(p)
	a.stall.Stop()
	a.b.stats.fetched(int64(n))
	switch {
	case err == nil:
		return n, nil
	case errors.Is(err, io.EOF) && a.left == int64(n) && a.skip == 0:
		return n, io.EOF
	case errors.Is(err, io.EOF):
		return n, fmt.Errorf("%w: body ended early", errdefs.ErrUnavailable)
	default:
		return n, attemptError(a.parent, a.ctx, err)
	}
}

// close ends the attempt and frees its slot. It is idempotent.
func (a *attempt) close() {
	if a.closed {
		return
	}
	a.closed = true
	a.stall.Stop()
	if a.body != nil {
		a.body.Close()
	}
	a.cancel(nil)
	a.b.slots.Release(1)
}
