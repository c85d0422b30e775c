package fs_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/snapshotters"
	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	ggcr "github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/lazysnap/lazysnap/internal/fused"
	"github.com/lazysnap/lazysnap/internal/testenv"
	"github.com/lazysnap/lazysnap/internal/unixsock"
	"github.com/lazysnap/lazysnap/snapshot"
)

// fallbackCase is a layer containerd asks for remotely that cannot be
// mounted, and the reason the snapshotter must count its fallback under.
type fallbackCase struct {
	name   string
	labels map[string]string
	reason string
}

// fallbackCases pushes the layers of the cases to a real registry.
func fallbackCases(t *testing.T) []fallbackCase {
	reg := testenv.StartRegistry(t)
	good := buildLayer(t, []tentry{text("etc/app.conf", "x = 1\n")})
	ref := push(t, reg.Host, "fallback/app:v1", good)
	plainRef, plainDigest := pushPlainGzip(t, reg.Host+"/fallback/plain:v1")

	wrongTOC := labels(ref, good)
	wrongTOC[lfsLabelTOC] = good.digest.String() // a valid digest, not the TOC's
	plain := map[string]string{lfsLabelRef: plainRef, lfsLabelLayer: plainDigest, lfsLabelTOC: good.tocDigest.String()}
	noTOC := labels(ref, good)
	delete(noTOC, lfsLabelTOC)
	down := labels("127.0.0.1:1/fallback/app:v1", good)
	return []fallbackCase{
		{"toc-digest-mismatch", wrongTOC, snapshot.ReasonVerification},
		{"plain-gzip", plain, snapshot.ReasonUnsupported},
		{"missing-toc-label", noTOC, snapshot.ReasonUnsupported},
		{"registry-unreachable", down, snapshot.ReasonUnreachable},
	}
}

// pushPlainGzip pushes a one-layer image whose layer is a plain gzip tar
// (no TOC) and returns its reference and the layer's digest.
func pushPlainGzip(t *testing.T, ref string) (string, string) {
	t.Helper()
	tarPath := writeTar(t, []tentry{text("etc/plain", "plain\n")})
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return os.Open(tarPath) })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		t.Fatal(err)
	}
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := ggcr.Write(r, img); err != nil {
		t.Fatal(err)
	}
	d, err := l.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return ref, d.String()
}

// TestFallbackReasons: every way a lazy mount fails is counted under its
// documented reason (docs/config.md, lazysnap_snapshot_fallbacks_total),
// with the real FS in-process and through fused's client and server.
func TestFallbackReasons(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireFUSE(t)
	cases := fallbackCases(t)
	f := newFS(t)
	for _, via := range []struct {
		name string
		fsys func(t *testing.T) snapshot.FileSystem
	}{
		{"in-process", func(*testing.T) snapshot.FileSystem { return f }},
		{"fused", func(t *testing.T) snapshot.FileSystem { return serveFused(t, f) }},
	} {
		for _, c := range cases {
			t.Run(via.name+"/"+c.name, func(t *testing.T) {
				if got := fallbackReason(t, via.fsys(t), c.labels); got != c.reason {
					t.Errorf("counted as %q, want %q", got, c.reason)
				}
			})
		}
	}
}

// fallbackReason prepares the layer the labels describe as containerd's
// remote-snapshot handler would and returns the reason its fallback was
// counted under.
func fallbackReason(t *testing.T, fsys snapshot.FileSystem, l map[string]string) string {
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	s, err := snapshot.New(ctx, t.TempDir(), fsys, snapshot.WithRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	labels := map[string]string{
		snapshots.LabelSnapshotRef:          "chain-1",
		snapshotters.TargetRefLabel:         l[lfsLabelRef],
		snapshotters.TargetLayerDigestLabel: l[lfsLabelLayer],
		snapshotters.TargetImageLayersLabel: l[lfsLabelLayer],
	}
	if toc, ok := l[lfsLabelTOC]; ok {
		labels[estargz.TOCJSONDigestAnnotation] = toc
	}
	if _, err := s.Prepare(ctx, "extract-1", "", snapshots.WithLabels(labels)); err != nil {
		t.Fatalf("Prepare must fall back, got %v", err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var reasons []string
	for _, mf := range families {
		if mf.GetName() != "lazysnap_snapshot_fallbacks_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetCounter().GetValue() > 0 {
				reasons = append(reasons, m.GetLabel()[0].GetValue())
			}
		}
	}
	if len(reasons) != 1 {
		t.Fatalf("fallbacks counted under %q, want one reason", reasons)
	}
	return reasons[0]
}

// serveFused serves fsys on a unix socket as `lazysnap fused` does and
// returns a client of it.
func serveFused(t *testing.T, fsys fused.Interface) *fused.Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "fused.sock")
	l, err := unixsock.Listen(context.Background(), sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := fused.NewHTTPServer(fsys)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("fused server: %v", err)
		}
	})
	return fused.NewClient(sock)
}
