package convert

import (
	"context"
	"io"
	"log"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/lazysnap/lazysnap/internal/testenv"
)

// roundTripRegistry pushes an image to host, converts it from there, pushes
// the result, and verifies what the registry then serves.
func roundTripRegistry(t *testing.T, host string) {
	ctx := context.Background()
	src, err := name.ParseReference(host+"/app:v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	dst, _ := name.ParseReference(host+"/app:v1-esgz", name.Insecure)
	if err := remote.Write(src, imageOf(t, gzLayer(t, richFiles()...), gzLayer(t, reg("etc/hostname", "top"))), remote.WithContext(ctx)); err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(src, remote.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	out := convertImage(t, img, WithPrioritizedFiles([]string{"/usr/bin/big", "/etc/hostname"}))
	if err := remote.Write(dst, out, remote.WithContext(ctx)); err != nil {
		t.Fatal(err)
	}
	pulled, err := remote.Image(dst, remote.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	res, err := Verify(ctx, pulled, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Prioritized != 1 || res[1].Prioritized != 1 {
		t.Fatalf("prioritized per layer: %d, %d; want 1, 1", res[0].Prioritized, res[1].Prioritized)
	}
}

func TestInProcessRegistry(t *testing.T) {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	roundTripRegistry(t, strings.TrimPrefix(srv.URL, "http://"))
}

func TestDistributionRegistry(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the registry binary")
	}
	roundTripRegistry(t, testenv.StartRegistry(t).Host)
}

func TestIndexPlatforms(t *testing.T) {
	amd := imageOf(t, gzLayer(t, reg("arch", "amd64")))
	arm := imageOf(t, gzLayer(t, reg("arch", "arm64")))
	armCfg, err := arm.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	armCfg = armCfg.DeepCopy()
	armCfg.Architecture = "arm64"
	arm, err = mutate.ConfigFile(arm, armCfg)
	if err != nil {
		t.Fatal(err)
	}
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
	)
	ctx := context.Background()
	all, err := newConverter(t).Index(ctx, idx)
	if err != nil {
		t.Fatal(err)
	}
	if im, _ := all.IndexManifest(); len(im.Manifests) != 2 {
		t.Fatalf("converted index has %d manifests, want 2", len(im.Manifests))
	}
	one, err := newConverter(t, WithPlatform(&v1.Platform{OS: "linux", Architecture: "arm64"})).Index(ctx, idx)
	if err != nil {
		t.Fatal(err)
	}
	im, _ := one.IndexManifest()
	if len(im.Manifests) != 1 || im.Manifests[0].Platform.Architecture != "arm64" {
		t.Fatalf("converted index %+v, want only arm64", im.Manifests)
	}
	img, err := one.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(ctx, img, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	_, err = newConverter(t, WithPlatform(&v1.Platform{OS: "linux", Architecture: "s390x"})).Index(ctx, idx)
	if err == nil {
		t.Fatal("converting a missing platform succeeded")
	}
}
