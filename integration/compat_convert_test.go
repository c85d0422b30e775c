package integration

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/images/converter"
	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	dockerconfig "github.com/containerd/containerd/v2/core/remotes/docker/config"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/stargz-snapshotter/estargz"
	estargzconvert "github.com/containerd/stargz-snapshotter/nativeconverter/estargz"
	"github.com/containerd/stargz-snapshotter/nativeconverter/zstdchunked"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/lazysnap/lazysnap/internal/testenv"
)

// prioritizedFiles are the files the converted images list first, as
// `nerdctl image convert --estargz-record-in` or ctr-remote's optimizer
// would: one in each data layer of smallImageLayers.
var prioritizedFiles = []string{"/data/random/file003", "/data/text/file001"}

// TestCompatForeignConverters runs images converted the way nerdctl and
// ctr-remote convert them (containerd's image converter with the
// stargz-snapshotter nativeconverter layer functions, prioritized files
// set) through lazysnap: the pull downloads no layer, each data layer's
// prioritized region (before .prefetch.landmark) is prefetched, reading the
// prioritized files then costs no request, and the container sees the image.
func TestCompatForeignConverters(t *testing.T) {
	for _, tc := range []struct {
		format string
		fn     func(...estargz.Option) converter.ConvertFunc
	}{
		{"estargz", estargzconvert.LayerConvertFunc},
		{"zstdchunked", zstdchunked.LayerConvertFunc},
	} {
		t.Run(tc.format, func(t *testing.T) {
			// A node each: the cache is shared by content, so a second image
			// of the same files would find them cached. Without the
			// background fetch, what is cached after the prefetch is the
			// prioritized region and nothing else.
			e := newLazyEnv(t)
			e.extraConfig = "[background_fetch]\nenable = false\n"
			e.start(t)
			img := testenv.BuildImage(t, e.reg, "foreign:gzip", smallImageLayers()...)
			conv := startConverterNode(t, e.reg.Host)
			dst := e.reg.Ref("foreign:" + tc.format)
			layers := conv.convertAndPush(t, img.Ref, dst, tc.fn)
			ref := testenv.RefVia(dst, e.proxy.Host)
			e.proxy.Reset()
			e.lazysnapPull(t, ref)
			if stored, total := layersInContentStore(t, e.cd, ref); stored != 0 {
				t.Errorf("%d of %d layers downloaded; want all mounted lazily", stored, total)
			}
			st := waitPrefetched(t, e, ref, len(layers))
			t.Logf("%s: pull and prefetch: %d blob GETs, %d bytes; prefetched bytes per layer: %d %d %d",
				tc.format, e.proxy.BlobGets(), e.proxy.BlobBytes(), st[layers[0]].BytesPresent,
				st[layers[1]].BytesPresent, st[layers[2]].BytesPresent)
			for _, l := range layers[1:] { // the data layers hold the prioritized files
				if s := st[l]; s.BytesPresent == 0 {
					t.Errorf("layer %s: nothing prefetched; want its prioritized file", l)
				}
			}
			e.proxy.Reset()
			out := e.run(t, ref, "foreign-"+tc.format+"-read", append([]string{"sha256sum"}, prioritizedFiles...)...)
			assertSums(t, img, prioritizedFiles, out)
			for _, g := range e.proxy.Gets() {
				if g.Blob == layers[1] || g.Blob == layers[2] {
					t.Errorf("reading the prioritized files fetched %s %s: the prefetch missed them", g.Blob, g.Range)
				}
			}
			assertListing(t, img, "/data", e.run(t, ref, "foreign-"+tc.format, testenv.ListingCommand("/data")...))
		})
	}
}

// converterNode is a plain containerd (no lazysnap) where images are
// converted, as on a CI machine running nerdctl.
type converterNode struct {
	cd       *testenv.Containerd
	resolver remotes.Resolver
}

func startConverterNode(t *testing.T, registry string) *converterNode {
	t.Helper()
	cd := testenv.StartContainerd(t, testenv.WithRegistryHost(registry))
	hosts := dockerconfig.ConfigureHosts(context.Background(),
		dockerconfig.HostOptions{HostDir: dockerconfig.HostDirFromRoot(cd.HostsDir)})
	return &converterNode{cd: cd, resolver: docker.NewResolver(docker.ResolverOptions{Hosts: hosts})}
}

// perLayerOptions gives each layer conversion its own options. containerd
// converts an image's layers concurrently, and the not-found list that
// WithAllowPrioritizeNotFound appends to must not be shared between them
// (a shared slice was a data race the race detector caught in CI).
func perLayerOptions(layerFn func(...estargz.Option) converter.ConvertFunc) converter.ConvertFunc {
	return func(ctx context.Context, cs content.Store, desc ocispec.Descriptor) (*ocispec.Descriptor, error) {
		var missing []string // prioritized files this layer does not have
		return layerFn(estargz.WithPrioritizedFiles(prioritizedFiles),
			estargz.WithAllowPrioritizeNotFound(&missing))(ctx, cs, desc)
	}
}

// convertAndPush fetches src, converts it to dst with layerFn and the
// prioritized files, pushes dst and returns its layer digests.
func (n *converterNode) convertAndPush(t *testing.T, src, dst string,
	layerFn func(...estargz.Option) converter.ConvertFunc) []string {
	t.Helper()
	ctx := namespaces.WithNamespace(context.Background(), n.cd.Namespace)
	ctx, done, err := n.cd.Client.WithLease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer done(ctx)
	if _, err := n.cd.Client.Fetch(ctx, src, containerd.WithResolver(n.resolver)); err != nil {
		t.Fatalf("fetching %s: %v", src, err)
	}
	out, err := converter.Convert(ctx, n.cd.Client, dst, src, converter.WithDockerToOCI(true),
		converter.WithLayerConvertFunc(perLayerOptions(layerFn)))
	if err != nil {
		t.Fatalf("converting %s: %v", src, err)
	}
	if err := n.cd.Client.Push(ctx, dst, out.Target, containerd.WithResolver(n.resolver)); err != nil {
		t.Fatalf("pushing %s: %v", dst, err)
	}
	manifest, err := images.Manifest(ctx, n.cd.Client.ContentStore(), out.Target, nil)
	if err != nil {
		t.Fatal(err)
	}
	var layers []string
	for _, l := range manifest.Layers {
		t.Logf("layer %s %s (%d bytes)", l.MediaType, l.Digest, l.Size)
		layers = append(layers, l.Digest.String())
	}
	return layers
}

// layerStatus is the part of `lazysnap status --json` the test reads.
type layerStatus struct {
	Digest       string
	PrefetchDone bool
	BytesPresent int64
}

// waitPrefetched polls `lazysnap status --json` until the n layers of ref
// finished their prefetch, and returns them by digest.
func waitPrefetched(t *testing.T, e *lazyEnv, ref string, n int) map[string]layerStatus {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var images []struct {
			Image       string        `json:"image"`
			LayerStatus []layerStatus `json:"layer_status"`
		}
		out := runBinary(t, testenv.LazysnapBin(), "status", "--root", e.ls.Root, "--json")
		if err := json.Unmarshal([]byte(out), &images); err != nil {
			t.Fatalf("lazysnap status --json: %v\n%s", err, out)
		}
		got := map[string]layerStatus{}
		for _, img := range images {
			for _, l := range img.LayerStatus {
				if img.Image == ref && l.PrefetchDone {
					got[l.Digest] = l
				}
			}
		}
		if len(got) == n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("prefetch of %s not done after 30 s: %s", ref, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
