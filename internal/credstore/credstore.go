// Package credstore keeps registry credentials that arrive at run time (the
// kubelet's CRI pull requests, see package criproxy) in memory, and serves
// them to go-containerregistry as an authn.Keychain.
//
// Credentials are kept per repository ("host/repository"), as the kubelet
// scopes pull secrets, and are only ever used for that repository: there is
// no fallback to the credentials of another repository of the same host, so
// one tenant's secret for repository A never reads repository B, and a
// bogus secret for A never breaks reads of B.
//
// Only credentials a pull succeeded with are kept ("working" credentials).
// A pull's credentials are first registered as pending for that one pull
// (containerd mounts the layers through the snapshotter during the pull,
// so they must be usable before it ends); criproxy promotes them when
// containerd's PullImage succeeds and discards them when it fails. Pending
// credentials serve only their own repository, and only while it has no
// working ones: a failing credential never replaces a working one, nor
// shadows it during its pull. Among working credentials the newest wins:
// the kubelet sends the pod's pull secret with every pull, so the newest
// that worked is the one the registry accepts now.
//
// Credentials are never logged. They are never written to disk and die
// with the process, unless WithPersistFile names a root-only file to keep
// the working ones in (credentials.persist, off by default). Combine the store with the docker config keychain with
// authn.NewMultiKeychain(store, authn.DefaultKeychain): the store answers
// Anonymous for repositories it knows nothing about, which makes the multi
// keychain ask the next one.
package credstore

import (
	"context"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

// Option configures a Store.
type Option func(*options)

type options struct {
	pendingTimeout time.Duration
	maxPending     int
	now            func() time.Time
	persistFile    string
}

// defaultOptions holds every default in one place.
func defaultOptions() options {
	return options{
		pendingTimeout: 30 * time.Minute, // The default is 30 minutes.
		maxPending:     4,                // The default is 4 pulls per repository.
		now:            time.Now,
		persistFile:    "", // The default is memory only (WithPersistFile).
	}
}

// WithPendingTimeout bounds how long credentials of a pull stay usable
// without the pull's outcome arriving (a proxy that died mid-pull never
// sends it). The default is 30 minutes.
func WithPendingTimeout(d time.Duration) Option { return func(o *options) { o.pendingTimeout = d } }

// WithMaxPending bounds the pulls in flight per repository whose
// credentials are kept; the oldest are dropped first. The default is 4.
func WithMaxPending(n int) Option { return func(o *options) { o.maxPending = max(n, 1) } }

// Store is an in-memory authn.Keychain. The zero value is not usable; use
// New. It is safe for concurrent use.
type Store struct {
	opts options

	mu      sync.RWMutex
	working map[string]authn.AuthConfig // by "host/repository": the newest a pull succeeded with
	pending map[string][]pending        // by "host/repository": pulls in flight, oldest first
}

// pending holds the credentials of one pull in flight.
type pending struct {
	pull  string
	cfg   authn.AuthConfig
	since time.Time
}

// New returns an empty store.
func New(opts ...Option) *Store {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	return &Store{opts: o, working: map[string]authn.AuthConfig{}, pending: map[string][]pending{}}
}

// SetCredentials records cfg for repository (for example "library/nginx")
// of the registry host (for example "docker.io" or "127.0.0.1:5000").
//
// A plain repository records cfg as working at once: the caller vouches
// that it works. A repository made with PullRepository carries a step of a
// pull instead (pending, succeeded, failed); this is how criproxy's steps
// cross the one call fused offers (POST /credentials). An empty cfg is
// ignored, except for a failed pull, so a pull without credentials never
// erases ones a pull secret gave. The error wraps
// errdefs.ErrInvalidArgument for a bad host, an empty repository or an
// undecodable auth field; its message never holds the credentials.
func (s *Store) SetCredentials(_ context.Context, host, repository string, cfg authn.AuthConfig) error {
	reg, err := name.NewRegistry(host)
	if err != nil {
		return fmt.Errorf("credentials for %q: %v: %w", host, err, errdefs.ErrInvalidArgument)
	}
	repository, pull, step, err := splitPull(repository)
	if err != nil {
		return fmt.Errorf("credentials for %s: %w", reg.RegistryStr(), err)
	}
	if repository == "" {
		// Host-wide credentials would serve every repository of the host.
		return fmt.Errorf("credentials for %s: no repository: %w", reg.RegistryStr(), errdefs.ErrInvalidArgument)
	}
	key := repoKey(reg.RegistryStr(), repository)
	if step == StepFailed {
		s.forget(key, pull)
		return nil
	}
	if cfg, err = normalize(cfg); err != nil {
		return fmt.Errorf("credentials for %s: %w", key, err)
	}
	if cfg == (authn.AuthConfig{}) {
		return nil
	}
	switch step {
	case StepPending:
		s.addPending(key, pull, cfg)
	default: // StepSucceeded, or a plain repository
		if err := s.promote(key, pull, cfg); err != nil {
			return fmt.Errorf("credentials for %s: kept in memory only: %w", key, err)
		}
	}
	return nil
}

func (s *Store) addPending(key, pull string, cfg authn.AuthConfig) {
	s.mu.Lock()
	defer s.mu.Unlock()
	list := s.live(key)
	if len(list) >= s.opts.maxPending {
		list = slices.Delete(list, 0, len(list)-s.opts.maxPending+1)
	}
	s.pending[key] = append(list, pending{pull: pull, cfg: cfg, since: s.opts.now()})
}

func (s *Store) promote(key, pull string, cfg authn.AuthConfig) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	prev, had := s.working[key]
	s.working[key] = cfg
	s.dropPending(key, pull)
	if had && prev == cfg {
		return nil // the kubelet resends the same secret with every pull
	}
	return s.persist()
}

func (s *Store) forget(key, pull string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropPending(key, pull)
}

// dropPending removes pull's entry; s.mu must be held for writing.
func (s *Store) dropPending(key, pull string) {
	if pull == "" {
		return
	}
	list := slices.DeleteFunc(s.pending[key], func(p pending) bool { return p.pull == pull })
	if len(list) == 0 {
		delete(s.pending, key)
		return
	}
	s.pending[key] = list
}

// live returns key's pending entries that have not timed out; s.mu must be
// held for writing.
func (s *Store) live(key string) []pending {
	cutoff := s.opts.now().Add(-s.opts.pendingTimeout)
	return slices.DeleteFunc(s.pending[key], func(p pending) bool { return p.since.Before(cutoff) })
}

// Resolve implements authn.Keychain. Only a name.Repository can have
// credentials; any other resource (a bare registry) resolves to Anonymous.
// The returned Authenticator looks the credentials up again on every call,
// so a long-lived transport (fs/remote keeps one per repository) picks up
// credentials a later pull replaced, or promoted, when it renews its token.
func (s *Store) Resolve(target authn.Resource) (authn.Authenticator, error) {
	repo, ok := target.(name.Repository)
	if !ok {
		return authn.Anonymous, nil
	}
	a := liveAuth{store: s, key: repoKey(repo.RegistryStr(), repo.RepositoryStr())}
	if _, ok := a.lookup(); !ok {
		return authn.Anonymous, nil
	}
	return a, nil
}

// Len returns how many repositories have working credentials, for tests
// and status.
func (s *Store) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.working)
}

func repoKey(host, repository string) string { return host + "/" + repository }

// lookup returns key's working credentials, else those of its newest pull
// in flight.
func (s *Store) lookup(key string) (authn.AuthConfig, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if cfg, ok := s.working[key]; ok {
		return cfg, true
	}
	list := s.pending[key]
	cutoff := s.opts.now().Add(-s.opts.pendingTimeout)
	for i := len(list) - 1; i >= 0; i-- {
		if !list[i].since.Before(cutoff) {
			return list[i].cfg, true
		}
	}
	return authn.AuthConfig{}, false
}

// liveAuth is an authn.Authenticator reading the store at each call.
type liveAuth struct {
	store *Store
	key   string
}

func (a liveAuth) lookup() (authn.AuthConfig, bool) { return a.store.lookup(a.key) }

// Authorization implements authn.Authenticator. Once a pull's credentials
// are discarded and nothing else is known, it answers anonymous.
func (a liveAuth) Authorization() (*authn.AuthConfig, error) {
	cfg, _ := a.lookup()
	return &cfg, nil
}

// normalize splits a docker-config style auth field (base64 of
// "user:password") into Username and Password: go-containerregistry's
// OAuth token exchange reads only those two.
func normalize(cfg authn.AuthConfig) (authn.AuthConfig, error) {
	if cfg.Auth == "" || cfg.Username != "" || cfg.Password != "" {
		return cfg, nil
	}
	field := strings.TrimSpace(cfg.Auth)
	b, err := base64.StdEncoding.DecodeString(field)
	if err != nil {
		b, err = base64.RawStdEncoding.DecodeString(field)
	}
	user, pass, found := strings.Cut(string(b), ":")
	if err != nil || !found {
		// The decoding error would quote the secret's bytes; say only what is wrong.
		return cfg, fmt.Errorf("auth field is not base64 of user:password: %w", errdefs.ErrInvalidArgument)
	}
	cfg.Username, cfg.Password, cfg.Auth = user, pass, ""
	return cfg, nil
}
