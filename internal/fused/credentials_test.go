package fused

import (
	"context"
	"sync"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/authn"
)

// credentialFS is a recordingFS that also takes credentials.
type credentialFS struct {
	recordingFS
	mu    sync.Mutex
	creds map[string]authn.AuthConfig
}

func (f *credentialFS) SetCredentials(_ context.Context, host, repo string, cfg authn.AuthConfig) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.creds == nil {
		f.creds = map[string]authn.AuthConfig{}
	}
	f.creds[host+"/"+repo] = cfg
	return nil
}

func TestCredentialsRoundTrip(t *testing.T) {
	ctx := context.Background()
	fsys := &credentialFS{}
	c := serve(t, fsys)
	sent := authn.AuthConfig{Username: "alice", Password: "p:ss", IdentityToken: "id", RegistryToken: "rt"}
	if err := c.SetCredentials(ctx, "reg.example:5000", "team/app", sent); err != nil {
		t.Fatal(err)
	}
	got := fsys.creds["reg.example:5000/team/app"]
	if got.Username != sent.Username || got.Password != sent.Password ||
		got.IdentityToken != sent.IdentityToken || got.RegistryToken != sent.RegistryToken {
		t.Errorf("server received user %q and other fields differing from what was sent", got.Username)
	}
	err := c.SetCredentials(ctx, "", "team/app", sent)
	if !errdefs.IsInvalidArgument(err) {
		t.Errorf("no host: %v; want invalid argument", err)
	}
}

func TestCredentialsNotSupported(t *testing.T) {
	c := serve(t, &recordingFS{})
	err := c.SetCredentials(context.Background(), "reg.example", "app", authn.AuthConfig{Username: "u", Password: "secret-value"})
	if !errdefs.IsNotImplemented(err) {
		t.Errorf("file system without credentials: %v; want not implemented", err)
	}
}
