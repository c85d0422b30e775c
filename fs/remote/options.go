package remote

import (
	"context"
	"log/slog"
	"net/http"
	"net/netip"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
)

// Option configures a Resolver.
type Option func(*options)

type options struct {
	hostsDir       string
	keychain       authn.Keychain
	transport      http.RoundTripper
	maxConcurrency int
	maxRetries     int
	stallTimeout   time.Duration
	minBackoff     time.Duration
	maxBackoff     time.Duration
	tailBytes      int64
	logger         *slog.Logger
	// lookupIP resolves redirect targets; tests replace it.
	lookupIP func(ctx context.Context, host string) ([]netip.Addr, error)
}

// DefaultMaxConcurrency is the default of WithMaxConcurrency; the daemon's
// configuration shows it (cmd/lazysnap reads it rather than repeating it).
const DefaultMaxConcurrency = 8

// DefaultTailBytes is the default of WithTailBytes: 512 KiB, the blob's
// last bytes that Resolve asks for with its size. A mount reads the footer
// and the TOC there next; whatever of them the tail does not hold costs a
// request (a round trip) of its own. An eStargz TOC takes about 30-60
// compressed bytes per file entry, so 512 KiB hold the TOC of a layer of
// some 10,000 files, more than most layers (base images included) have.
// Asking for more costs link time on every mount, mostly for bytes no one
// reads: 512 KiB take about 20 ms at 200 Mbit/s, a round trip of a 20 ms
// link, so doubling the tail would add as much to every mount as it saves
// on the few layers whose TOC is larger. Those pay one more request, for
// the part of the TOC before the tail only (see Blob.Fetch).
const DefaultTailBytes int64 = 512 << 10

// defaultOptions holds every default in one place.
func defaultOptions() options {
	return options{
		hostsDir:       "/etc/containerd/certs.d", // The default is containerd's hosts dir.
		keychain:       authn.DefaultKeychain,     // The default is the docker config keychain.
		transport:      nil,                       // The default is the per-host transport containerd builds from hosts.toml.
		maxConcurrency: DefaultMaxConcurrency,     // The default is 8 requests at once per registry host.
		maxRetries:     4,                         // The default is 4 retries of a failed request.
		stallTimeout:   30 * time.Second,          // The default is 30s without a byte.
		minBackoff:     100 * time.Millisecond,    // The default is 100ms before the first retry,
		maxBackoff:     5 * time.Second,           // doubling up to 5s.
		tailBytes:      DefaultTailBytes,          // The default is 512 KiB (see DefaultTailBytes).
		logger:         slog.Default(),            // The default is slog.Default().
		lookupIP:       lookupIP,                  // The default is the system's resolver.
	}
}

// WithHostsDir sets the containerd hosts directory (certs.d layout with
// hosts.toml per host). "" disables it. The default is /etc/containerd/certs.d.
func WithHostsDir(dir string) Option { return func(o *options) { o.hostsDir = dir } }

// WithKeychain sets where credentials come from. The default is
// authn.DefaultKeychain (the docker config).
func WithKeychain(k authn.Keychain) Option { return func(o *options) { o.keychain = k } }

// WithTransport sets the base HTTP transport used for every host, under the
// authentication layer. It replaces the transport containerd builds per host
// from hosts.toml, so TLS settings of hosts.toml (ca, client, skip_verify)
// no longer apply; hosts, schemes, paths and headers still do. The default is
// nil: containerd's per-host transport (TLS from hosts.toml, HTTPS with HTTP
// fallback for localhost), with enough idle connections per host for
// WithMaxConcurrency.
func WithTransport(t http.RoundTripper) Option { return func(o *options) { o.transport = t } }

// WithMaxConcurrency bounds the requests in flight to each registry host
// (host:port; a mirror is a host of its own), across all blobs of the
// resolver. A request holds its slot until its body is read or closed.
// Slots are per host so that one slow or dead registry cannot take the
// slots another registry's reads need. The default is 8.
func WithMaxConcurrency(n int) Option { return func(o *options) { o.maxConcurrency = max(n, 1) } }

// WithMaxRetries sets how often a transient failure is retried. A fetch
// stream renews its budget whenever an attempt delivered bytes. The default
// is 4.
func WithMaxRetries(n int) Option { return func(o *options) { o.maxRetries = max(n, 0) } }

// WithStallTimeout sets how long a request may wait for response headers or
// for the next body byte before the attempt is abandoned and retried. The
// default is 30s.
func WithStallTimeout(d time.Duration) Option { return func(o *options) { o.stallTimeout = d } }

// WithBackoff sets the wait before the first retry and its cap; the wait
// doubles with each retry, with jitter. The default is 100ms, capped at 5s.
func WithBackoff(initial, maxWait time.Duration) Option {
	return func(o *options) { o.minBackoff, o.maxBackoff = initial, max(initial, maxWait) }
}

// WithTailBytes sets how many of a blob's last bytes Resolve asks for: it
// learns the size with a suffix Range GET ("Range: bytes=-n", the last n
// bytes, or the whole blob if it is smaller) and keeps the bytes on the
// blob until Blob.TakeTail, so that a mount's footer and TOC (at the
// blob's end) are served from memory and the mount costs one round trip
// instead of three (HEAD, footer, TOC). A server that ignores the range
// (200) tells the size with Content-Length; its body, the whole blob, is
// kept as the tail when no longer than n, else closed unread. One that
// refuses the range (416) or answers it otherwise is asked with a HEAD as
// before. Either host is then asked with a HEAD alone for later blobs. 0
// turns it off: a HEAD (or, where HEAD is refused, a one-byte Range GET)
// learns the size and no bytes are kept. The default is DefaultTailBytes
// (512 KiB).
func WithTailBytes(n int64) Option { return func(o *options) { o.tailBytes = max(n, 0) } }

// WithLogger sets the logger for retries and fallbacks. The default is
// slog.Default().
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }
