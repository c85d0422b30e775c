package criproxy_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	lazyremote "github.com/lazysnap/lazysnap/fs/remote"
	"github.com/lazysnap/lazysnap/internal/credstore"
	"github.com/lazysnap/lazysnap/internal/criproxy"
	"github.com/lazysnap/lazysnap/internal/criproxy/criproxytest"
	"github.com/lazysnap/lazysnap/internal/fused"
	"github.com/lazysnap/lazysnap/internal/testenv"
)

// tenants is a registry requiring basic authentication (the real registry
// with htpasswd) holding one blob in each of two repositories, the proxy
// with a fake containerd behind it, and fused's credential endpoint in
// front of the store that fs/remote reads with: the path pull credentials
// take in `lazysnap serve`.
type tenants struct {
	private        *testenv.Registry
	user, password string
	blobs          map[string][]byte // by repository
	store          *credstore.Store
	images         runtimeapi.ImageServiceClient
	// duringPull runs inside containerd's PullImage, where containerd
	// mounts the image's layers; its error fails the pull.
	duringPull func(ctx context.Context, req *runtimeapi.PullImageRequest) error
}

func startTenants(t *testing.T) *tenants {
	t.Helper()
	reg := testenv.StartRegistry(t)
	tn := &tenants{user: "kubelet", password: randomSecret(t), blobs: map[string][]byte{}, store: credstore.New()}
	for i, repo := range []string{"team/app", "other/app"} {
		tn.blobs[repo] = bytes.Repeat([]byte(fmt.Sprintf("%s-%d.", repo, i)), 1000)
		pushBlob(t, reg.Host+"/"+repo, tn.blobs[repo])
	}
	tn.private = criproxytest.StartAuthRegistry(t, reg, tn.user, tn.password)
	upstream := startFakeContainerd(t, tn)
	tn.images = startProxy(t, upstream, criproxy.WithCredentialSink(startFusedCredentials(t, tn.store)))
	return tn
}

func pushBlob(t *testing.T, repository string, data []byte) {
	t.Helper()
	repo, err := name.NewRepository(repository, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteLayer(repo, static.NewLayer(data, types.OCILayer), remote.WithContext(t.Context())); err != nil {
		t.Fatalf("pushing to %s: %v", repository, err)
	}
}

// pull pulls team/app or other/app through the proxy with user and
// password, as a kubelet does with a pod's pull secret.
func (tn *tenants) pull(repo, user, password string) error {
	_, err := tn.images.PullImage(context.Background(), &runtimeapi.PullImageRequest{
		Image: &runtimeapi.ImageSpec{Image: tn.private.Ref(repo + ":1")},
		Auth:  &runtimeapi.AuthConfig{Username: user, Password: password},
	})
	return err
}

// read reads repo's blob from the private registry with the store's
// credentials, with a new resolver each time so that no token or
// connection of an earlier read helps.
func (tn *tenants) read(ctx context.Context, repo string) error {
	r := lazyremote.NewResolver(lazyremote.WithHostsDir(""), lazyremote.WithKeychain(tn.store),
		lazyremote.WithMaxRetries(0))
	want := tn.blobs[repo]
	b, err := r.Resolve(ctx, tn.private.Ref(repo+":1"), digest.FromBytes(want))
	if err != nil {
		return err
	}
	rc, err := b.Fetch(ctx, 0, b.Size())
	if err != nil {
		return err
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, want) {
		return errors.New("read bytes differ from the blob's")
	}
	return nil
}

// fakeContainerd is containerd's CRI image service as far as the proxy
// sees it: a pull runs tenants.duringPull, then succeeds or fails.
type fakeContainerd struct {
	runtimeapi.UnimplementedImageServiceServer
	tn *tenants
}

func (f fakeContainerd) PullImage(ctx context.Context, req *runtimeapi.PullImageRequest) (*runtimeapi.PullImageResponse, error) {
	if err := f.tn.duringPull(ctx, req); err != nil {
		return nil, status.Error(codes.Unknown, err.Error())
	}
	return &runtimeapi.PullImageResponse{ImageRef: "sha256:" + digest.FromString(req.GetImage().GetImage()).Encoded()}, nil
}

func startFakeContainerd(t *testing.T, tn *tenants) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "containerd.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	runtimeapi.RegisterImageServiceServer(srv, fakeContainerd{tn: tn})
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return sock
}

// credentialFS is a fused file system that mounts nothing and takes
// credentials into store, as lazysnap fused's does.
type credentialFS struct{ *credstore.Store }

func (credentialFS) Mount(context.Context, string, map[string]string) error { return nil }
func (credentialFS) Check(context.Context, string, map[string]string) error { return nil }
func (credentialFS) Unmount(context.Context, string) error                  { return nil }

// startFusedCredentials serves fused's API for store and returns a client.
func startFusedCredentials(t *testing.T, store *credstore.Store) *fused.Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "fused.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: fused.NewServer(credentialFS{store}), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return fused.NewClient(sock)
}

// readsDuringPull makes each pull read the given repositories (as
// containerd's mounts do) and then fail with pullErr, or succeed if nil.
// A read failing during the pull fails the test.
func readsDuringPull(t *testing.T, tn *tenants, pullErr error, repos ...string) {
	tn.duringPull = func(ctx context.Context, req *runtimeapi.PullImageRequest) error {
		for _, repo := range repos {
			if err := tn.read(ctx, repo); err != nil {
				t.Errorf("reading %s during the pull of %s: %v", repo, req.GetImage().GetImage(), err)
			}
		}
		return pullErr
	}
}

// TestBogusSecretKeepsOtherTenantReading: a pod pulling with a wrong
// secret (its pull fails) neither replaces the credentials that work for
// the repository nor breaks reads of other tenants, during its pull or
// after it.
func TestBogusSecretKeepsOtherTenantReading(t *testing.T) {
	tn := startTenants(t)
	// Tenant A's pull mounts its layers with its own credentials, still
	// pending, during the pull.
	readsDuringPull(t, tn, nil, "team/app")
	if err := tn.pull("team/app", tn.user, tn.password); err != nil {
		t.Fatalf("pull with the right secret: %v", err)
	}
	// Tenant B pulls the same image with a wrong secret; containerd fails
	// the pull. Tenant A's mounts keep reading meanwhile.
	readsDuringPull(t, tn, errors.New("401 Unauthorized"), "team/app")
	if err := tn.pull("team/app", tn.user, "wrong-"+tn.password); err == nil {
		t.Fatal("the fake containerd's failure did not reach the kubelet")
	}
	if err := tn.read(t.Context(), "team/app"); err != nil {
		t.Errorf("tenant A's read after a pull with a wrong secret: %v", err)
	}
}

// TestCredentialsScopedToRepository: credentials that work for one
// repository are not used for another of the same registry, and a wrong
// secret for one repository does not break reads of another.
func TestCredentialsScopedToRepository(t *testing.T) {
	tn := startTenants(t)
	readsDuringPull(t, tn, nil)
	if err := tn.pull("team/app", tn.user, tn.password); err != nil {
		t.Fatalf("pull of team/app: %v", err)
	}
	if err := tn.read(t.Context(), "other/app"); err == nil {
		t.Error("other/app was read with team/app's credentials")
	}
	if err := tn.pull("other/app", tn.user, tn.password); err != nil {
		t.Fatalf("pull of other/app: %v", err)
	}
	readsDuringPull(t, tn, errors.New("401 Unauthorized"), "other/app")
	if err := tn.pull("team/app", "mallory", "bogus"); err == nil {
		t.Fatal("the fake containerd's failure did not reach the kubelet")
	}
	for _, repo := range []string{"team/app", "other/app"} {
		if err := tn.read(t.Context(), repo); err != nil {
			t.Errorf("reading %s after a bogus pull of team/app: %v", repo, err)
		}
	}
}

// TestCredentialsRecordedOnlyAfterSuccess: the credentials of a pull serve
// its own repository while it runs (containerd mounts the layers then), no
// other, and are gone once the pull failed.
func TestCredentialsRecordedOnlyAfterSuccess(t *testing.T) {
	tn := startTenants(t)
	tn.duringPull = func(ctx context.Context, req *runtimeapi.PullImageRequest) error {
		if err := tn.read(ctx, "team/app"); err != nil {
			t.Errorf("reading team/app during its pull: %v", err)
		}
		if err := tn.read(ctx, "other/app"); err == nil {
			t.Error("other/app was read with the credentials of a pull of team/app")
		}
		return errors.New("unpacking failed")
	}
	if err := tn.pull("team/app", tn.user, tn.password); err == nil {
		t.Fatal("the fake containerd's failure did not reach the kubelet")
	}
	if n := tn.store.Len(); n != 0 {
		t.Errorf("%d repositories have credentials after a failed pull; want none", n)
	}
	if err := tn.read(t.Context(), "team/app"); err == nil {
		t.Error("team/app was read with the credentials of a failed pull")
	}
}
