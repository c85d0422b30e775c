// Package credstore keeps registry credentials that arrive at run time (the
// kubelet's CRI pull requests, see package criproxy) in memory, and serves
// them to go-containerregistry as an authn.Keychain.
//
// Credentials are kept per registry host and per repository, the latest
// ones winning: a kubelet sends the credentials of the pod's pull secret
// with every pull, so the newest are the ones the registry accepts now.
// They are never written to disk and never logged; they die with the
// process. Combine the store with the docker config keychain with
// authn.NewMultiKeychain(store, authn.DefaultKeychain): the store answers
// Anonymous for hosts it knows nothing about, which makes the multi
// keychain ask the next one.
package credstore

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"
	"sync"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

// Store is an in-memory authn.Keychain. The zero value is not usable; use
// New. It is safe for concurrent use.
type Store struct {
	mu     sync.RWMutex
	byRepo map[string]authn.AuthConfig // by "host/repository"
	byHost map[string]authn.AuthConfig // the latest of any repository of the host
}

// New returns an empty store.
func New() *Store {
	return &Store{byRepo: map[string]authn.AuthConfig{}, byHost: map[string]authn.AuthConfig{}}
}

// SetCredentials records cfg for repository (for example "library/nginx";
// "" for the whole host) of the registry host (for example "docker.io" or
// "127.0.0.1:5000"). An empty cfg is ignored, so a pull without credentials
// never erases ones a pull secret gave. The error wraps
// errdefs.ErrInvalidArgument for a bad host or an undecodable auth field;
// its message never holds the credentials.
func (s *Store) SetCredentials(_ context.Context, host, repository string, cfg authn.AuthConfig) error {
	reg, err := name.NewRegistry(host)
	if err != nil {
		return fmt.Errorf("credentials for %q: %v: %w", host, err, errdefs.ErrInvalidArgument)
	}
	if cfg, err = normalize(cfg); err != nil {
		return fmt.Errorf("credentials for %s: %w", reg.RegistryStr(), err)
	}
	if cfg == (authn.AuthConfig{}) {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.byHost[reg.RegistryStr()] = cfg
	if repository != "" {
		s.byRepo[repoKey(reg.RegistryStr(), repository)] = cfg
	}
	return nil
}

// Resolve implements authn.Keychain. For a name.Repository the
// repository's own credentials win over the host's latest. The returned
// Authenticator looks the credentials up again on every call, so a
// long-lived transport (fs/remote keeps one per repository) picks up
// credentials a later pull replaced when it renews its token.
func (s *Store) Resolve(target authn.Resource) (authn.Authenticator, error) {
	a := liveAuth{store: s, host: target.RegistryStr()}
	if repo, ok := target.(name.Repository); ok {
		a.repository = repo.RepositoryStr()
	}
	if _, ok := a.lookup(); !ok {
		return authn.Anonymous, nil
	}
	return a, nil
}

// Len returns how many hosts have credentials, for tests and status.
func (s *Store) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.byHost)
}

func repoKey(host, repository string) string { return host + "/" + repository }

// liveAuth is an authn.Authenticator reading the store at each call.
type liveAuth struct {
	store            *Store
	host, repository string
}

func (a liveAuth) lookup() (authn.AuthConfig, bool) {
	a.store.mu.RLock()
	defer a.store.mu.RUnlock()
	if a.repository != "" {
		if cfg, ok := a.store.byRepo[repoKey(a.host, a.repository)]; ok {
			return cfg, true
		}
	}
	cfg, ok := a.store.byHost[a.host]
	return cfg, ok
}

// Authorization implements authn.Authenticator.
func (a liveAuth) Authorization() (*authn.AuthConfig, error) {
	cfg, ok := a.lookup()
	if !ok { // cannot happen: entries are never removed
		return &authn.AuthConfig{}, nil
	}
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
