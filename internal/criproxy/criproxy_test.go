package criproxy_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/lazysnap/lazysnap/internal/credstore"
	"github.com/lazysnap/lazysnap/internal/criproxy"
	"github.com/lazysnap/lazysnap/internal/criproxy/criproxytest"
	"github.com/lazysnap/lazysnap/internal/testenv"
)

// TestPullRecordsCredentials pulls an image from a registry requiring basic
// authentication through the proxy in front of a real containerd with CRI:
// the pull fails without credentials, succeeds with them, the proxy's store
// holds them for the image's repository, and containerd lists the image.
// A later pull with a wrong password fails and leaves them in place.
func TestPullRecordsCredentials(t *testing.T) {
	testenv.RequireRoot(t)
	ctx := context.Background()
	reg := testenv.StartRegistry(t)
	pause := testenv.BuildPauseImage(t, reg)
	testenv.BuildImage(t, reg, "private/app:1",
		testenv.LayerSpec{Files: testenv.GeneratedFiles("/data", 2, 4096, testenv.Random)})
	user, password := "kubelet", randomSecret(t)
	private := criproxytest.StartAuthRegistry(t, reg, user, password)
	cd := testenv.StartContainerd(t, testenv.WithNamespace("k8s.io"), testenv.WithRegistryHost(reg.Host),
		testenv.WithRegistryHost(private.Host), testenv.WithCRI(pause, "overlayfs"))
	store := credstore.New()
	images := startProxy(t, cd.Address, criproxy.WithCredentialSink(store))
	ref := private.Ref("private/app:1")

	_, err := images.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	if err == nil {
		t.Fatal("pull without credentials succeeded; the registry must require them")
	}
	if store.Len() != 0 {
		t.Errorf("a pull without credentials stored some")
	}
	resp, err := images.PullImage(ctx, &runtimeapi.PullImageRequest{
		Image: &runtimeapi.ImageSpec{Image: ref},
		Auth:  &runtimeapi.AuthConfig{Username: user, Password: password},
	})
	if err != nil {
		t.Fatalf("pull with credentials: %v", err)
	}
	assertRecorded(t, store, ref, user, password)
	assertListed(t, images, ref, resp.GetImageRef())

	_, err = images.PullImage(ctx, &runtimeapi.PullImageRequest{
		Image: &runtimeapi.ImageSpec{Image: ref},
		Auth:  &runtimeapi.AuthConfig{Username: user, Password: "wrong-" + password},
	})
	if err == nil {
		t.Fatal("pull with a wrong password succeeded")
	}
	assertRecorded(t, store, ref, user, password)
}

func assertRecorded(t *testing.T, store *credstore.Store, ref, user, password string) {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	a, err := store.Resolve(r.Context())
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := a.Authorization()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Username != user || cfg.Password != password {
		t.Errorf("store holds user %q for %s (password matches: %v); want the pull's credentials",
			cfg.Username, r.Context(), cfg.Password == password)
	}
}

func assertListed(t *testing.T, images runtimeapi.ImageServiceClient, ref, id string) {
	t.Helper()
	list, err := images.ListImages(context.Background(), &runtimeapi.ListImagesRequest{})
	if err != nil {
		t.Fatalf("ListImages through the proxy: %v", err)
	}
	for _, img := range list.GetImages() {
		if slices.Contains(img.GetRepoTags(), ref) {
			if img.GetId() != id {
				t.Errorf("image %s has id %s; PullImage returned %s", ref, img.GetId(), id)
			}
			return
		}
	}
	t.Errorf("ListImages through the proxy has no %s among %d images", ref, len(list.GetImages()))
}

// startProxy serves a Proxy for containerd on a unix socket and returns a
// CRI image client connected to it.
func startProxy(t *testing.T, containerd string, opts ...criproxy.Option) runtimeapi.ImageServiceClient {
	t.Helper()
	p, err := criproxy.New(containerd, opts...)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "cri.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx, l) }()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("proxy: %v", err)
		}
		if err := p.Close(); err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("closing proxy: %v", err)
		}
	})
	return runtimeapi.NewImageServiceClient(conn)
}

func randomSecret(t *testing.T) string {
	t.Helper()
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "pw-" + hex.EncodeToString(b)
}
