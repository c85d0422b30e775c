package remote

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"

	"github.com/containerd/errdefs"
)

// maxRedirects is as many as Go's default policy follows.
const maxRedirects = 10

// checkRedirect is the redirect policy of every registry client. Registries
// legitimately redirect blob GETs to storage (S3, a CDN, a minio on the same
// node), so redirects are followed, but one chosen by a hostile or
// compromised registry must not turn the daemon, which runs as root on the
// node, against the node's own network. It refuses:
//   - more than maxRedirects hops;
//   - a hop from https to anything else (a downgrade would expose the
//     request, and the blob's bytes, on the wire);
//   - targets that are link-local, unspecified or multicast addresses, or
//     cloud metadata endpoints, by IP literal, by name, or by what the name
//     resolves to.
//
// Loopback and private addresses stay allowed: node-local and in-cluster
// storage is common. It also strips Authorization and Cookie from a hop to
// any other host:port than the first request's. Today nothing sets them
// there (go-containerregistry adds Authorization inside its transport, per
// hop, only for the registry host, and Go's client copies only what the
// caller set on the first request), but Go would copy them to another port
// of the same host name and to subdomains, so the policy does not rely on
// that.
//
// Residual risk: the target's name is resolved here and again when
// dialing, so a DNS server answering differently the second time (DNS
// rebinding) can still steer a redirected request to a refused address.
// Closing that needs a check in the dialer of the base transport, which
// hosts.toml's per-host transports and WithTransport own. The ping and
// token exchange of go-containerregistry's transport use clients of their
// own and are outside this policy.
//
// A refusal wraps errdefs.ErrPermissionDenied: it is final, never retried.
func (r *Resolver) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= maxRedirects {
		return refuse(req.URL, fmt.Sprintf("stopped after %d redirects", maxRedirects))
	}
	for _, prev := range via {
		if prev.URL.Scheme == "https" && req.URL.Scheme != "https" {
			return refuse(req.URL, "downgrade from https")
		}
	}
	if canonicalHost(req.URL) != canonicalHost(via[0].URL) {
		req.Header.Del("Authorization")
		req.Header.Del("Cookie")
	}
	return r.checkTarget(req.Context(), req.URL)
}

// checkTarget refuses u when its host is, or resolves to, a refused address.
func (r *Resolver) checkTarget(ctx context.Context, u *url.URL) error {
	host := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	if isMetadataName(host) {
		return refuse(u, "cloud metadata endpoint")
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if why := refusedAddr(a); why != "" {
			return refuse(u, why)
		}
		return nil
	}
	addrs, err := r.opts.lookupIP(ctx, host)
	if err != nil {
		return fmt.Errorf("redirect to %s: resolving %s: %w: %w", redact(u), host, errdefs.ErrUnavailable, err)
	}
	for _, a := range addrs {
		if why := refusedAddr(a); why != "" {
			return refuse(u, fmt.Sprintf("%s resolves to %s, %s", host, a, why))
		}
	}
	return nil
}

// lookupIP resolves host with the system's resolver.
func lookupIP(ctx context.Context, host string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
}

// refusedAddr says why a is no redirect target, or "" if it may be one.
func refusedAddr(a netip.Addr) string {
	a = a.Unmap()
	switch {
	case isMetadataAddr(a):
		return "a cloud metadata address"
	case a.IsLinkLocalUnicast():
		return "a link-local address"
	case a.IsUnspecified():
		return "an unspecified address"
	case a.IsMulticast():
		return "a multicast address"
	}
	return ""
}

// isMetadataAddr reports the metadata endpoints outside the link-local
// ranges (169.254.169.254 is link-local anyway): AWS's IPv6 one and
// Alibaba Cloud's.
func isMetadataAddr(a netip.Addr) bool {
	return a == netip.MustParseAddr("fd00:ec2::254") || a == netip.MustParseAddr("100.100.100.200")
}

// isMetadataName reports host names of metadata endpoints (GCE's; "metadata"
// is how GCE guests reach it through their search domain).
func isMetadataName(host string) bool {
	return host == "metadata.google.internal" || host == "metadata"
}

func refuse(u *url.URL, why string) error {
	return fmt.Errorf("refusing redirect to %s: %s: %w", redact(u), why, errdefs.ErrPermissionDenied)
}

// redact drops the query (presigned storage URLs carry signatures in it)
// and any user info.
func redact(u *url.URL) string {
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
}

// canonicalHost is u's host:port with the scheme's default port made
// explicit, so "host" and "host:443" compare equal.
func canonicalHost(u *url.URL) string {
	port := u.Port()
	switch {
	case port != "":
	case u.Scheme == "https":
		port = "443"
	default:
		port = "80"
	}
	return net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}
