package integration

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/proxy"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/lazysnap/lazysnap/internal/testenv"
	"github.com/lazysnap/lazysnap/snapshot"
)

// TestChainIDTakeover is the attack: image X claims image Y's diff_ids, so
// containerd commits X's lazily mounted layer under Y's chain ID and would
// reuse it for Y. lazysnap streams the layer, finds that it does not
// decompress to the diff_id its chain ID promises, marks it bad (with the
// reason, on lazysnap's snapshot) and withdraws it from containerd; a later
// pull of Y then mounts Y's own layer and Y's container reads Y's bytes.
func TestChainIDTakeover(t *testing.T) {
	e := startLazyEnv(t)
	who := func(seed uint64) []testenv.LayerSpec {
		return []testenv.LayerSpec{testenv.BusyboxLayer(), {Files: []testenv.FileSpec{
			{Path: "/data/who", Size: 256 << 10, Content: testenv.Random, Seed: seed}}}}
	}
	y := testenv.BuildImage(t, e.reg, "takeover-y:gzip", who(7)...)
	x := testenv.BuildImage(t, e.reg, "takeover-x:gzip", who(8)...)
	yRef := testenv.RefVia(e.convert(t, y, "takeover-y:esgz"), e.proxy.Host)
	xLazy := e.convert(t, x, "takeover-x:esgz")
	forged := e.reg.Ref("takeover-x:forged")
	testenv.ForgeDiffIDs(t, forged, xLazy, e.reg.Ref("takeover-y:esgz"))
	forgedRef := testenv.RefVia(forged, e.proxy.Host)

	e.lazysnapPull(t, forgedRef)
	target := chainIDs(t, e.reg.Ref("takeover-y:esgz"))[1] // X's layer 1 is committed under Y's chain ID
	start := time.Now()
	// Until the check completes, X's container reads X's bytes: what runs
	// before the check is the image's own content, under a name it stole.
	t.Logf("forged image before the check: %s", e.run(t, forgedRef, "takeover-x", "sha256sum", "/data/who"))

	sn := lazysnapSnapshots(t, e.ls.Socket)
	bad := waitBadLayer(t, sn, target.String())
	t.Logf("layer marked bad %v after the pull: %s", time.Since(start).Round(time.Millisecond), bad.Labels[snapshot.LabelBad])
	if !strings.Contains(bad.Labels[snapshot.LabelBad], "diff_id") {
		t.Errorf("bad layer's reason %q does not name the diff_id", bad.Labels[snapshot.LabelBad])
	}
	if ref := bad.Labels["containerd.io/snapshot/cri.image-ref"]; ref != forgedRef {
		t.Errorf("bad layer names image %q, want %q", ref, forgedRef)
	}
	waitGoneFromContainerd(t, e, target.String())

	e.lazysnapPull(t, yRef)
	out := e.run(t, yRef, "takeover-y", "sha256sum", "/data/who")
	assertSums(t, y, []string{"/data/who"}, out)
}

// chainIDs returns the chain IDs of ref's layers, from its config.
func chainIDs(t *testing.T, ref string) []digest.Digest {
	t.Helper()
	img := remoteImage(t, ref)
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	var out []digest.Digest
	var chain digest.Digest
	for _, d := range cf.RootFS.DiffIDs {
		chain = chainOf(chain, d)
		out = append(out, chain)
	}
	return out
}

func chainOf(parent digest.Digest, diffID v1.Hash) digest.Digest {
	if parent == "" {
		return digest.Digest(diffID.String())
	}
	return digest.FromString(parent.String() + " " + diffID.String())
}

// lazysnapSnapshots talks to lazysnap's own snapshot service, as
// containerd does.
func lazysnapSnapshots(t *testing.T, sock string) snapshots.Snapshotter {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), "lazysnap")
}

// waitBadLayer waits until lazysnap marks the layer committed as chain bad.
// The deadline only keeps a broken build from hanging.
func waitBadLayer(t *testing.T, sn snapshots.Snapshotter, chain string) snapshots.Info {
	t.Helper()
	filter := fmt.Sprintf("labels.%q==%q", snapshot.LabelBadChainID, chain)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var found []snapshots.Info
		err := sn.Walk(context.Background(), func(_ context.Context, i snapshots.Info) error {
			found = append(found, i)
			return nil
		}, filter)
		if err != nil {
			t.Fatal(err)
		}
		if len(found) == 1 {
			return found[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("layer committed as %s never marked bad (%d found)", chain, len(found))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitGoneFromContainerd waits until containerd no longer knows the
// snapshot chain in the test namespace.
func waitGoneFromContainerd(t *testing.T, e *lazyEnv, chain string) {
	t.Helper()
	ctx := namespaces.WithNamespace(context.Background(), e.cd.Namespace)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		_, err := e.cd.Client.SnapshotService("lazysnap").Stat(ctx, chain)
		if errors.Is(err, errdefs.ErrNotFound) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd still has snapshot %s: %v", chain, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
