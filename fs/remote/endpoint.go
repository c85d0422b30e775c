package remote

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/containerd/errdefs"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// endpoint is one host with an HTTP client authenticated for one repository.
type endpoint struct {
	name   string       // the host, for errors
	client *http.Client // follows redirects under checkRedirect; no overall timeout (stall detection instead)
}

// endpoint returns the authenticated client for repo on c, building it once:
// building pings the host and may fetch a bearer token.
func (r *Resolver) endpoint(ctx context.Context, repo name.Repository, c candidate) (*endpoint, error) {
	key := c.host.Scheme + "://" + c.host.Host + c.host.Path + " " + repo.Name()
	r.mu.Lock()
	e, ok := r.transports[key]
	r.mu.Unlock()
	if ok {
		return e, nil
	}
	// Callers share one handshake, so it must not die with the first
	// caller's ctx: it runs detached, bounded by the stall timeout, and each
	// caller stops waiting when its own ctx ends.
	ch := r.dial.DoChan(key, func() (any, error) {
		hctx, cancel := context.WithTimeoutCause(context.WithoutCancel(ctx), r.opts.stallTimeout, errStalled)
		defer cancel()
		e, err := r.newEndpoint(hctx, repo, c)
		if err != nil && errors.Is(context.Cause(hctx), errStalled) {
			return nil, fmt.Errorf("host %s: handshake: %w", c.host.Host, errStalled)
		}
		if err == nil {
			r.mu.Lock()
			r.transports[key] = e
			r.mu.Unlock()
		}
		return e, err
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return nil, res.Err
		}
		return res.Val.(*endpoint), nil
	case <-ctx.Done():
		return nil, fmt.Errorf("host %s: %w", c.host.Host, ctx.Err())
	}
}

func (r *Resolver) newEndpoint(ctx context.Context, repo name.Repository, c candidate) (*endpoint, error) {
	where := c.host.Host
	var regOpts []name.Option
	if c.host.Scheme == "http" {
		regOpts = append(regOpts, name.Insecure) // lets the ping use plain HTTP
	}
	reg, err := name.NewRegistry(c.host.Host, regOpts...)
	if err != nil {
		return nil, fmt.Errorf("host %s: %w: %w", where, errdefs.ErrInvalidArgument, err)
	}
	auth, err := authn.Resolve(ctx, r.opts.keychain, r.credentialTarget(repo, reg, c))
	if err != nil {
		return nil, fmt.Errorf("host %s: credentials: %w", where, classify(err))
	}
	rt, err := transport.NewWithContext(ctx, reg, auth, r.baseTransport(c), []string{repo.Scope(transport.PullScope)})
	if err != nil {
		return nil, fmt.Errorf("host %s: authenticating for %s: %w", where, repo.Name(), classify(err))
	}
	return &endpoint{name: where, client: &http.Client{Transport: rt, CheckRedirect: r.checkRedirect}}, nil
}

// credentialTarget picks whose credentials a host gets: always the
// repository's on that host, since keychains scoped per repository (the CRI
// pull credentials) need the repository, and host-wide ones read its
// registry. The server (the registry itself, or the host hosts.toml names
// "server" for it) and any entry for the registry's own host get the
// repository's credentials; a mirror gets only credentials stored for the
// same repository on the mirror's own name, so registry credentials never
// leak to a third-party mirror.
func (r *Resolver) credentialTarget(repo name.Repository, host name.Registry, c candidate) authn.Resource {
	if c.server || host.RegistryStr() == repo.RegistryStr() {
		return repo
	}
	return host.Repo(repo.RepositoryStr())
}

// baseTransport is what carries requests to c under the authentication layer.
func (r *Resolver) baseTransport(c candidate) http.RoundTripper {
	t := r.opts.transport
	if t == nil && c.host.Client != nil {
		t = c.host.Client.Transport
	}
	if t == nil {
		t = http.DefaultTransport
	}
	if len(c.host.Header) > 0 {
		t = headerTransport{header: c.host.Header, inner: t}
	}
	return t
}
