package credstore

import (
	"context"
	"encoding/base64"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

func resolve(t *testing.T, kc authn.Keychain, target authn.Resource) authn.AuthConfig {
	t.Helper()
	a, err := kc.Resolve(target)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := a.Authorization()
	if err != nil {
		t.Fatal(err)
	}
	return *cfg
}

func mustRepo(t *testing.T, s string) name.Repository {
	t.Helper()
	r, err := name.NewRepository(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRepositoryWinsOverHost(t *testing.T) {
	ctx := context.Background()
	s := New()
	alice := authn.AuthConfig{Username: "alice", Password: "a"}
	bob := authn.AuthConfig{Username: "bob", Password: "b"}
	if err := s.SetCredentials(ctx, "reg.example:5000", "team/app", alice); err != nil {
		t.Fatal(err)
	}
	if err := s.SetCredentials(ctx, "reg.example:5000", "other/app", bob); err != nil {
		t.Fatal(err)
	}
	if got := resolve(t, s, mustRepo(t, "reg.example:5000/team/app")); got != alice {
		t.Errorf("team/app resolved to %q; want alice's credentials", got.Username)
	}
	// A bare registry gets the host's latest credentials.
	if got := resolve(t, s, mustRepo(t, "reg.example:5000/x").Registry); got != bob {
		t.Errorf("registry resolved to %q; want bob's (the latest)", got.Username)
	}
}

func TestUnknownHostIsAnonymous(t *testing.T) {
	s := New()
	a, err := s.Resolve(mustRepo(t, "nowhere.example/app"))
	if err != nil {
		t.Fatal(err)
	}
	if a != authn.Anonymous {
		t.Errorf("unknown host resolved to %v; want authn.Anonymous so a multi keychain asks the next one", a)
	}
}

// TestLatestWinsForLiveTransports checks that an Authenticator resolved
// before a newer pull sees the newer credentials, as a cached transport
// renewing its token must.
func TestLatestWinsForLiveTransports(t *testing.T) {
	ctx := context.Background()
	s := New()
	if err := s.SetCredentials(ctx, "reg.example", "app", authn.AuthConfig{Username: "u", Password: "old"}); err != nil {
		t.Fatal(err)
	}
	a, err := s.Resolve(mustRepo(t, "reg.example/app"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetCredentials(ctx, "reg.example", "app", authn.AuthConfig{Username: "u", Password: "new"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := a.Authorization()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Password != "new" {
		t.Errorf("earlier Authenticator returned the replaced password; want the latest")
	}
}

func TestNormalizesAuthAndDockerHub(t *testing.T) {
	ctx := context.Background()
	s := New()
	auth := base64.StdEncoding.EncodeToString([]byte("carol:p:w"))
	if err := s.SetCredentials(ctx, "docker.io", "library/busybox", authn.AuthConfig{Auth: auth}); err != nil {
		t.Fatal(err)
	}
	got := resolve(t, s, mustRepo(t, "busybox")) // index.docker.io/library/busybox
	if got.Username != "carol" || got.Password != "p:w" {
		t.Errorf("got user %q; want carol with the password after the first colon", got.Username)
	}
}

func TestEmptyAndInvalid(t *testing.T) {
	ctx := context.Background()
	s := New()
	if err := s.SetCredentials(ctx, "reg.example", "app", authn.AuthConfig{}); err != nil {
		t.Fatal(err)
	}
	if s.Len() != 0 {
		t.Errorf("empty credentials were stored")
	}
	err := s.SetCredentials(ctx, "reg.example", "app", authn.AuthConfig{Auth: "!!not base64"})
	if !errdefs.IsInvalidArgument(err) {
		t.Errorf("bad auth field: %v; want invalid argument", err)
	}
	if err := s.SetCredentials(ctx, "bad host/x", "", authn.AuthConfig{Username: "u"}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("bad host: %v; want invalid argument", err)
	}
}

func TestMultiKeychainFallsThrough(t *testing.T) {
	ctx := context.Background()
	s := New()
	fallback := authn.NewKeychainFromHelper(staticHelper{user: "docker", secret: "cfg"})
	kc := authn.NewMultiKeychain(s, fallback)
	if got := resolve(t, kc, mustRepo(t, "reg.example/app")); got.Username != "docker" {
		t.Errorf("unknown host resolved to %q; want the fallback keychain's", got.Username)
	}
	if err := s.SetCredentials(ctx, "reg.example", "app", authn.AuthConfig{Username: "cri", Password: "x"}); err != nil {
		t.Fatal(err)
	}
	if got := resolve(t, kc, mustRepo(t, "reg.example/app")); got.Username != "cri" {
		t.Errorf("known host resolved to %q; want the store's", got.Username)
	}
}

type staticHelper struct{ user, secret string }

func (h staticHelper) Get(string) (string, string, error) { return h.user, h.secret, nil }
