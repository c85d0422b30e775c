package credstore

import (
	"context"
	"encoding/base64"
	"testing"
	"time"

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

// TestNoFallbackAcrossRepositories checks that credentials of one
// repository never serve another of the same host, nor the bare registry.
func TestNoFallbackAcrossRepositories(t *testing.T) {
	ctx := context.Background()
	s := New()
	alice := authn.AuthConfig{Username: "alice", Password: "a"}
	if err := s.SetCredentials(ctx, "reg.example:5000", "team/app", alice); err != nil {
		t.Fatal(err)
	}
	if got := resolve(t, s, mustRepo(t, "reg.example:5000/team/app")); got != alice {
		t.Errorf("team/app resolved to %q; want alice's credentials", got.Username)
	}
	for _, target := range []authn.Resource{mustRepo(t, "reg.example:5000/other/app"), mustRepo(t, "reg.example:5000/x").Registry} {
		a, err := s.Resolve(target)
		if err != nil {
			t.Fatal(err)
		}
		if a != authn.Anonymous {
			t.Errorf("%s resolved to team/app's credentials; want authn.Anonymous", target)
		}
	}
	if err := s.SetCredentials(ctx, "reg.example:5000", "", alice); !errdefs.IsInvalidArgument(err) {
		t.Errorf("host-wide credentials: %v; want invalid argument", err)
	}
}

func setPull(t *testing.T, s *Store, repo, pull string, step Step, cfg authn.AuthConfig) {
	t.Helper()
	if err := s.SetCredentials(context.Background(), "reg.example", PullRepository(repo, pull, step), cfg); err != nil {
		t.Fatal(err)
	}
}

func assertAnonymous(t *testing.T, s *Store, repo string) {
	t.Helper()
	a, err := s.Resolve(mustRepo(t, "reg.example/"+repo))
	if err != nil {
		t.Fatal(err)
	}
	if a != authn.Anonymous {
		cfg, _ := a.Authorization()
		t.Errorf("%s resolved to %q's credentials; want authn.Anonymous", repo, cfg.Username)
	}
}

// TestPendingServesOnlyItsRepositoryUntilOutcome follows one pull's
// credentials: usable for the pull's repository while it runs (containerd
// mounts layers then), for no other, and kept only if the pull succeeded.
func TestPendingServesOnlyItsRepositoryUntilOutcome(t *testing.T) {
	s := New()
	carol := authn.AuthConfig{Username: "carol", Password: "c"}
	setPull(t, s, "team/app", "p1", StepPending, carol)
	a, err := s.Resolve(mustRepo(t, "reg.example/team/app"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg, _ := a.Authorization(); *cfg != carol {
		t.Errorf("during the pull team/app resolved to %q; want the pull's credentials", cfg.Username)
	}
	assertAnonymous(t, s, "other/app")
	if s.Len() != 0 {
		t.Errorf("pending credentials counted as working")
	}
	setPull(t, s, "team/app", "p1", StepFailed, authn.AuthConfig{})
	assertAnonymous(t, s, "team/app")
	if cfg, _ := a.Authorization(); *cfg != (authn.AuthConfig{}) {
		t.Errorf("an Authenticator resolved during the failed pull still returns its credentials")
	}

	setPull(t, s, "team/app", "p2", StepPending, carol)
	setPull(t, s, "team/app", "p2", StepSucceeded, carol)
	if got := resolve(t, s, mustRepo(t, "reg.example/team/app")); got != carol || s.Len() != 1 {
		t.Errorf("after a successful pull team/app resolved to %q (%d working); want carol's", got.Username, s.Len())
	}
}

// TestFailingPullNeverReplacesWorking: a pull with a wrong secret for a
// repository with working credentials neither shadows them while it runs
// nor replaces them when it fails.
func TestFailingPullNeverReplacesWorking(t *testing.T) {
	s := New()
	alice := authn.AuthConfig{Username: "alice", Password: "a"}
	setPull(t, s, "team/app", "p1", StepPending, alice)
	setPull(t, s, "team/app", "p1", StepSucceeded, alice)
	a, err := s.Resolve(mustRepo(t, "reg.example/team/app"))
	if err != nil {
		t.Fatal(err)
	}
	setPull(t, s, "team/app", "p2", StepPending, authn.AuthConfig{Username: "mallory", Password: "bogus"})
	if cfg, _ := a.Authorization(); *cfg != alice {
		t.Errorf("during a pull with another secret team/app resolved to %q; want the working alice", cfg.Username)
	}
	setPull(t, s, "team/app", "p2", StepFailed, authn.AuthConfig{})
	if got := resolve(t, s, mustRepo(t, "reg.example/team/app")); got != alice {
		t.Errorf("after the failed pull team/app resolved to %q; want alice", got.Username)
	}
}

// TestPendingIsBounded: pending credentials of pulls whose outcome never
// arrives expire, and only the newest few per repository are kept.
func TestPendingIsBounded(t *testing.T) {
	now := time.Unix(1000, 0)
	s := New(WithPendingTimeout(time.Minute), WithMaxPending(2))
	s.opts.now = func() time.Time { return now }
	for _, p := range []string{"p1", "p2", "p3"} {
		setPull(t, s, "team/app", p, StepPending, authn.AuthConfig{Username: p, Password: "x"})
	}
	if n := len(s.pending["reg.example/team/app"]); n != 2 {
		t.Errorf("%d pending pulls kept; want 2", n)
	}
	if got := resolve(t, s, mustRepo(t, "reg.example/team/app")); got.Username != "p3" {
		t.Errorf("resolved to %q; want the newest pull's", got.Username)
	}
	now = now.Add(2 * time.Minute)
	assertAnonymous(t, s, "team/app")
}

func TestUnknownPullStep(t *testing.T) {
	err := New().SetCredentials(context.Background(), "reg.example", "team/app#done=p1", authn.AuthConfig{Username: "u", Password: "p"})
	if !errdefs.IsInvalidArgument(err) {
		t.Errorf("unknown step: %v; want invalid argument", err)
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
