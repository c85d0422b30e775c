package remote

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// errStalled is the cause of an attempt abandoned for receiving no byte
// within the stall timeout.
var errStalled = fmt.Errorf("%w: no data within the stall timeout", errdefs.ErrUnavailable)

// statusCategory maps an HTTP status to an errdefs category. Only
// ErrUnavailable is retried.
func statusCategory(code int) error {
	switch {
	case code == http.StatusNotFound:
		return errdefs.ErrNotFound
	case code == http.StatusUnauthorized:
		return errdefs.ErrUnauthenticated
	case code == http.StatusForbidden:
		return errdefs.ErrPermissionDenied
	case code == http.StatusRequestedRangeNotSatisfiable:
		return errdefs.ErrInvalidArgument
	case code == http.StatusTooManyRequests, code == http.StatusRequestTimeout, code >= 500:
		return errdefs.ErrUnavailable
	default:
		return errdefs.ErrUnknown
	}
}

// statusError describes an unexpected response.
func statusError(resp *http.Response) error {
	return fmt.Errorf("%w: HTTP %s", statusCategory(resp.StatusCode), resp.Status)
}

// classify gives a category to an error from the network or from
// go-containerregistry's transport (ping, token exchange): a registry error
// by its status, anything else as unavailable. Context errors and refused
// redirects (checkRedirect, permanent) stay as they are. The URL in a
// client error loses its query, which for a redirect to storage holds a
// presigned signature.
func classify(err error) error {
	var uerr *url.Error
	if errors.As(err, &uerr) {
		if u, perr := url.Parse(uerr.URL); perr == nil {
			uerr.URL = redact(u)
		}
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
		errdefs.IsPermissionDenied(err) {
		return err
	}
	var terr *transport.Error
	if errors.As(err, &terr) && terr.StatusCode != 0 {
		return fmt.Errorf("%w: %w", statusCategory(terr.StatusCode), err)
	}
	if errdefs.IsUnavailable(err) {
		return err
	}
	return fmt.Errorf("%w: %w", errdefs.ErrUnavailable, err)
}

// attemptError is the error of a failed attempt under parent: the parent's
// own cancellation is final; a stall (the attempt's own cancel cause) and
// anything else from the network is transient.
func attemptError(parent, attemptCtx context.Context, err error) error {
	if perr := parent.Err(); perr != nil {
		return perr
	}
	if cause := context.Cause(attemptCtx); errors.Is(cause, errStalled) {
		return errStalled
	}
	return classify(err)
}

// retryable reports whether err is worth another attempt.
func retryable(err error) bool { return errdefs.IsUnavailable(err) }
