package sharedtrace

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Option configures a Finder.
type Option func(*options)

type options struct {
	keychain  authn.Keychain
	transport http.RoundTripper
	nameOpts  []name.Option
	maxBytes  int64
	wait      time.Duration
	timeout   time.Duration
	keepFound time.Duration
	keepNone  time.Duration
	logger    *slog.Logger
}

// DefaultMaxBytes is the default of WithMaxBytes: 8 MiB, some 100,000 paths,
// ten times what a trace keeps by default (fs.DefaultTraceMaxFiles).
const DefaultMaxBytes int64 = 8 << 20

func defaultOptions() options {
	return options{
		keychain:  authn.DefaultKeychain, // The default is the docker config keychain.
		transport: remote.DefaultTransport,
		maxBytes:  DefaultMaxBytes,  // The default is 8 MiB.
		wait:      5 * time.Second,  // The default is 5 seconds.
		timeout:   30 * time.Second, // The default is 30 seconds.
		keepFound: 10 * time.Minute, // The default keeps a found trace 10 minutes,
		keepNone:  time.Minute,      // and "none" 1 minute.
		logger:    slog.Default(),
	}
}

// WithKeychain sets where registry credentials come from. The default is
// authn.DefaultKeychain (the docker config).
func WithKeychain(k authn.Keychain) Option { return func(o *options) { o.keychain = k } }

// WithTransport sets the HTTP transport under the authentication. The
// default is remote.DefaultTransport.
func WithTransport(t http.RoundTripper) Option { return func(o *options) { o.transport = t } }

// WithNameOptions sets how image references are parsed, name.Insecure for
// plain HTTP say. The default is none: HTTPS, plain HTTP only for localhost,
// loopback and private addresses (go-containerregistry's rule).
func WithNameOptions(opts ...name.Option) Option { return func(o *options) { o.nameOpts = opts } }

// WithMaxBytes caps the size of a trace taken from the registry; a larger
// one is ignored. The default is DefaultMaxBytes (8 MiB).
func WithMaxBytes(n int64) Option { return func(o *options) { o.maxBytes = n } }

// WithWait bounds how long Lookup.Wait waits for the registry's answer; a
// prefetch then goes on without. The default is 5 seconds.
func WithWait(d time.Duration) Option { return func(o *options) { o.wait = d } }

// WithTimeout bounds a whole lookup (a late answer still serves the next
// mounts). The default is 30 seconds.
func WithTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// WithKeep sets how long an answer is remembered before the registry is
// asked again: found (a trace) and none (no trace, or a failed lookup). The
// default is 10 minutes and 1 minute.
func WithKeep(found, none time.Duration) Option {
	return func(o *options) { o.keepFound, o.keepNone = found, none }
}

// WithLogger sets the logger. The default is slog.Default().
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }
