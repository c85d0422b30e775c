package remote

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"path"

	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/remotes/docker/config"
	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/name"
)

// hostsKey is the name containerd looks hosts.toml up by: go-containerregistry
// calls Docker Hub "index.docker.io", containerd "docker.io".
func hostsKey(reg name.Registry) string {
	if reg.RegistryStr() == name.DefaultRegistry {
		return "docker.io"
	}
	return reg.RegistryStr()
}

// candidate is one host to try for a registry, in hosts.toml order.
type candidate struct {
	host docker.RegistryHost
	// server is true for the last host, the one hosts.toml names "server"
	// (or the registry itself): it is trusted with the registry's credentials.
	server bool
}

// candidates returns the pull-capable hosts for registry, reading its
// hosts.toml the first time and caching the result (and its HTTP
// transports) for the Resolver's lifetime.
func (r *Resolver) candidates(ctx context.Context, registry string) ([]candidate, error) {
	r.mu.Lock()
	hosts, ok := r.hosts[registry]
	r.mu.Unlock()
	if !ok {
		var err error
		if hosts, err = r.configureHosts(ctx, registry); err != nil {
			return nil, err
		}
		r.mu.Lock()
		r.hosts[registry] = hosts
		r.mu.Unlock()
	}
	var out []candidate
	for i, h := range hosts {
		if h.Capabilities.Has(docker.HostCapabilityPull) {
			out = append(out, candidate{host: h, server: i == len(hosts)-1})
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no host with pull capability for %s in %s: %w", registry, r.opts.hostsDir, errdefs.ErrFailedPrecondition)
	}
	return out, nil
}

// configureHosts parses hosts.toml with containerd's own package. With no
// hosts.toml it gives what containerd does: https, or for localhost and
// loopback addresses https falling back to plain http.
func (r *Resolver) configureHosts(ctx context.Context, registry string) ([]docker.RegistryHost, error) {
	opts := config.HostOptions{UpdateClient: r.tuneClient}
	if r.opts.hostsDir != "" {
		opts.HostDir = config.HostDirFromRoot(r.opts.hostsDir)
	}
	hosts, err := config.ConfigureHosts(ctx, opts)(registry)
	if err != nil {
		return nil, fmt.Errorf("reading hosts configuration of %s in %q: %w: %w", registry, r.opts.hostsDir, errdefs.ErrFailedPrecondition, err)
	}
	return hosts, nil
}

// tuneClient keeps enough idle connections per host for maxConcurrency
// parallel range requests; Go's default of 2 would redial constantly.
func (r *Resolver) tuneClient(c *http.Client) error {
	if t, ok := c.Transport.(*http.Transport); ok {
		t.MaxIdleConnsPerHost = max(t.MaxIdleConnsPerHost, r.opts.maxConcurrency)
		t.MaxIdleConns = max(t.MaxIdleConns, 2*r.opts.maxConcurrency)
	}
	return nil
}

// blobURL is where host serves blob d of repo. hosts.toml's path (default
// "/v2", verbatim with override_path) prefixes the repository. A host that is
// not the registry itself is a mirror and, as containerd does, is told the
// upstream registry with the "ns" query parameter.
func blobURL(h docker.RegistryHost, registry, repo, d string) string {
	u := url.URL{Scheme: h.Scheme, Host: h.Host, Path: path.Join("/", h.Path, repo, "blobs", d)}
	if isMirror(h, registry) {
		u.RawQuery = url.Values{"ns": {registry}}.Encode()
	}
	return u.String()
}

func isMirror(h docker.RegistryHost, registry string) bool {
	return h.Host != registry && (registry != "docker.io" || h.Host != "registry-1.docker.io")
}

// headerTransport adds hosts.toml's per-host headers to every request.
type headerTransport struct {
	header http.Header
	inner  http.RoundTripper
}

func (t headerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context()) // a RoundTripper must not change its request
	for k, vs := range t.header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	return t.inner.RoundTrip(req)
}
