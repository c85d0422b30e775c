package integration

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"

	lazyfs "github.com/lazysnap/lazysnap/fs"
	lazyremote "github.com/lazysnap/lazysnap/fs/remote"
	"github.com/lazysnap/lazysnap/internal/testenv"
)

// mirrorEnv is an upstream registry behind a counting proxy (what reaches
// the upstream), an eStargz image on it, and simulated nodes: package fs
// in-process, a cache each, layers mounted with FUSE and read.
type mirrorEnv struct {
	upstream *testenv.CountingProxy
	ref      string // the image, named by the upstream's (proxy's) host
	layers   []mirrorLayer
}

type mirrorLayer struct{ digest, toc string }

func newMirrorEnv(t *testing.T) *mirrorEnv {
	t.Helper()
	requireLazyBinaries(t)
	reg := testenv.StartRegistry(t)
	e := &mirrorEnv{upstream: testenv.StartCountingProxy(t, reg.Host)}
	img := testenv.BuildImage(t, reg, "mirror:gzip", smallImageLayers()...)
	dst := reg.Ref("mirror:esgz")
	runBinary(t, testenv.LazyconvBin(), "convert", "--plain-http", img.Ref, dst)
	e.ref = testenv.RefVia(dst, e.upstream.Host)
	desc := remoteImage(t, dst)
	m, err := desc.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range m.Layers {
		e.layers = append(e.layers, mirrorLayer{l.Digest.String(), l.Annotations[lazyfs.LabelTOCDigest]})
	}
	return e
}

// hostsDir writes a hosts.toml for the upstream listing mirror ("" for
// none) before it, as a node's /etc/containerd/certs.d would.
func (e *mirrorEnv) hostsDir(t *testing.T, mirror string) string {
	t.Helper()
	dir := t.TempDir()
	toml := fmt.Sprintf("server = \"http://%s\"\n", e.upstream.Host)
	if mirror != "" {
		toml += fmt.Sprintf("\n[host.\"http://%s\"]\n  capabilities = [\"pull\", \"resolve\"]\n", mirror)
	}
	toml += fmt.Sprintf("\n[host.\"http://%s\"]\n  capabilities = [\"pull\", \"resolve\"]\n", e.upstream.Host)
	if err := os.MkdirAll(filepath.Join(dir, e.upstream.Host), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, e.upstream.Host, "hosts.toml"), []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// runNodes starts n nodes at once, each with its own cache, mounting every
// layer and reading every file of it, and returns the bytes read per node.
func (e *mirrorEnv) runNodes(t *testing.T, n int, hostsDir string) int64 {
	t.Helper()
	var wg sync.WaitGroup
	read := make([]int64, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			read[i], errs[i] = e.runNode(t.Context(), t.TempDir(), hostsDir)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
		if read[i] != read[0] {
			t.Fatalf("node %d read %d bytes, node 0 %d", i, read[i], read[0])
		}
	}
	return read[0]
}

func (e *mirrorEnv) runNode(ctx context.Context, dir, hostsDir string) (int64, error) {
	fsys, err := lazyfs.New(lazyfs.WithCacheDir(filepath.Join(dir, "cache")),
		lazyfs.WithResolver(lazyremote.NewResolver(lazyremote.WithHostsDir(hostsDir))),
		lazyfs.WithBackgroundFetch(false), lazyfs.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		return 0, err
	}
	defer fsys.Close()
	var total int64
	for i, l := range e.layers {
		mp := filepath.Join(dir, fmt.Sprint(i))
		if err := os.Mkdir(mp, 0o755); err != nil {
			return 0, err
		}
		labels := map[string]string{lazyfs.LabelImageRef: e.ref, lazyfs.LabelLayerDigest: l.digest, lazyfs.LabelTOCDigest: l.toc}
		if err := fsys.Mount(ctx, mp, labels); err != nil {
			return 0, fmt.Errorf("mounting layer %d: %w", i, err)
		}
		n, err := readTree(mp)
		if uerr := fsys.Unmount(ctx, mp); err == nil {
			err = uerr
		}
		if err != nil {
			return 0, fmt.Errorf("layer %d: %w", i, err)
		}
		total += n
	}
	return total, nil
}

// readTree reads every regular file under dir (through FUSE: each chunk is
// fetched and verified) and returns the bytes read.
func readTree(dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		n, err := io.Copy(io.Discard, f)
		total += n
		return err
	})
	return total, err
}

// TestCompatMirrorFallbackToUpstream lists a mirror that is down before the
// upstream in hosts.toml: every node still reads the whole image, from the
// upstream.
func TestCompatMirrorFallbackToUpstream(t *testing.T) {
	e := newMirrorEnv(t)
	dead := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)) // nothing listens
	read := e.runNodes(t, 2, e.hostsDir(t, dead))
	if read == 0 || e.upstream.BlobGets() == 0 {
		t.Fatalf("read %d bytes, upstream served %d blob GETs; want the image read from the upstream", read,
			e.upstream.BlobGets())
	}
	t.Logf("mirror down: each node read %d bytes; upstream served %d blob GETs, %d bytes", read,
		e.upstream.BlobGets(), e.upstream.BlobBytes())
}

// TestCompatMirrorUpstreamLoad measures, for 1, 4 and 16 nodes reading the
// same image at once, what reaches the upstream with no mirror and with a
// pull-through cache (distribution's proxy mode) listed first in hosts.toml.
// The mirror starts empty for each measurement; a second wave of N nodes
// then reads through the warm mirror. It logs the figures docs/compat.md
// quotes.
func TestCompatMirrorUpstreamLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("runs 63 simulated nodes")
	}
	e := newMirrorEnv(t)
	direct := e.hostsDir(t, "")
	for _, n := range []int{1, 4, 16} {
		e.upstream.Reset()
		read := e.runNodes(t, n, direct)
		t.Logf("N=%2d no mirror:   upstream %4d blob GETs %10d bytes (each node read %d bytes)",
			n, e.upstream.BlobGets(), e.upstream.BlobBytes(), read)

		mirror := testenv.StartRegistry(t, testenv.WithRegistryProxy("http://"+e.upstream.Host))
		front := testenv.StartCountingProxy(t, mirror.Host)
		e.upstream.Reset()
		e.runNodes(t, n, e.hostsDir(t, front.Host))
		t.Logf("N=%2d with mirror: upstream %4d blob GETs %10d bytes; mirror served %4d blob GETs %10d bytes",
			n, e.upstream.BlobGets(), e.upstream.BlobBytes(), front.BlobGets(), front.BlobBytes())
		if front.BlobGets() == 0 {
			t.Errorf("N=%d: the mirror served nothing; hosts.toml lists it first", n)
		}
		// The same nodes again, caches emptied, now that the mirror has
		// every blob: what a second wave of nodes costs the upstream.
		e.upstream.Reset()
		e.runNodes(t, n, e.hostsDir(t, front.Host))
		t.Logf("N=%2d warm mirror: upstream %4d blob GETs %10d bytes", n, e.upstream.BlobGets(), e.upstream.BlobBytes())
	}
}
