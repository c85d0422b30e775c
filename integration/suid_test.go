package integration

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"

	"github.com/lazysnap/lazysnap/internal/testenv"
)

// suidLayer is a one-layer image's gzip tar: the probe, set-user-ID root,
// and a c 1 3 device (allowed by runc's default device rules).
func suidLayer(t *testing.T) []byte {
	t.Helper()
	probe := testenv.SuidProbe(t)
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, h := range []*tar.Header{
		{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "bin/probe", Typeflag: tar.TypeReg, Mode: 0o4755, Size: int64(len(probe))},
		{Name: "devices/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "devices/null", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3},
	} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write(probe)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func pushOneLayer(t *testing.T, ref string, layer []byte) {
	t.Helper()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layer)), nil },
		tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON), l)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
}

// TestSetuidAndDevicesInContainers runs a set-user-ID-root program of an
// image as uid 1000 (`ctr run --user 1000`), which also writes to a device
// node of the image, on overlayfs and on lazysnap, with a writable root
// (an overlay over the layer) and a read-only one (a view of the one layer:
// a read-only bind of it). lazysnap must behave as overlayfs does, though
// its FUSE mounts are nosuid and nodev.
func TestSetuidAndDevicesInContainers(t *testing.T) {
	e := startLazyEnv(t)
	src := e.reg.Ref("suid:gzip")
	pushOneLayer(t, src, suidLayer(t))
	lazy := testenv.RefVia(e.convert(t, &testenv.Image{Ref: src}, "suid:esgz"), e.proxy.Host)
	e.cd.MustCtr(t, e.cd.PullArgs(src, "overlayfs")...)
	e.lazysnapPull(t, lazy)
	mounts := lazyMounts(t, e.ls.Root)
	if len(mounts) != 1 {
		t.Fatalf("%d lazysnap mounts, want the image's one layer", len(mounts))
	}
	var st unix.Statfs_t
	if err := unix.Statfs(mounts[0].MountPoint, &st); err != nil {
		t.Fatal(err)
	}
	if st.Flags&unix.ST_NOSUID == 0 || st.Flags&unix.ST_NODEV == 0 {
		t.Errorf("layer mount flags %#x, want nosuid and nodev", st.Flags)
	}

	for _, ro := range []bool{false, true} {
		// ctr sets no_new_privs by default, which ignores the set-user-ID
		// bit; Kubernetes does not (allowPrivilegeEscalation is true).
		extra := []string{"--rm", "--user", "1000:1000", "--allow-new-privs"}
		if ro {
			extra = append(extra, "--read-only")
		}
		var got [2]string
		for i, c := range []struct{ snapshotter, ref string }{{"overlayfs", src}, {"lazysnap", lazy}} {
			id := strings.ReplaceAll(c.snapshotter, "fs", "") + map[bool]string{false: "-rw", true: "-ro"}[ro]
			args := append(e.cd.RunFlags(c.snapshotter, extra...), c.ref, id, "/bin/probe", "/devices/null")
			got[i] = strings.TrimSpace(e.cd.MustCtr(t, args...))
			t.Logf("%s, read-only %v: %s", c.snapshotter, ro, got[i])
		}
		if got[0] != "euid=0 dev=ok" || got[1] != got[0] {
			t.Errorf("read-only %v: overlayfs %q, lazysnap %q; want both euid=0 dev=ok", ro, got[0], got[1])
		}
	}
}
