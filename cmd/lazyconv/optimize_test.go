package main

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/lazysnap/lazysnap/internal/imageref"
	"github.com/lazysnap/lazysnap/internal/testenv"
	"github.com/lazysnap/lazysnap/prefetchlist"
	"golang.org/x/sys/unix"
)

// TestOptimizeRecordsRanges: optimize learns the parts of a large file the
// workload reads, writes them in --trace-out's list, and converts with them:
// the file stays in its place and its ranges go into the layer's
// annotation. --ranges=false takes it whole.
func TestOptimizeRecordsRanges(t *testing.T) {
	testenv.RequireRoot(t)
	var st unix.Statfs_t
	if err := unix.Statfs(os.TempDir(), &st); err != nil {
		t.Fatal(err)
	}
	if st.Type == unix.TMPFS_MAGIC {
		t.Skipf("%s is on tmpfs, whose pages cannot be dropped: no ranges can be recorded there", os.TempDir())
	}
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Skipf("needs busybox-static at /bin/busybox: %v", err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range []struct {
		name string
		body []byte
		mode int64
	}{{"bin/busybox", bb, 0o755}, {"data/big", bytes.Repeat([]byte("b"), 8<<20), 0o644}} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: f.mode, Size: int64(len(f.body))}); err != nil {
			t.Fatal(err)
		}
		tw.Write(f.body)
	}
	tw.Close()
	b := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		t.Fatal(err)
	}
	src := writeOCI(t, img, "")
	cmd := `["/bin/busybox","sh","-c","/bin/busybox dd if=/data/big of=/dev/null bs=65536 count=1 skip=64; echo READY; /bin/busybox sleep 1000"]`

	for _, tc := range []struct {
		ranges bool
		want   string // the layer's annotation
	}{{true, "/data/big\n#@ranges "}, {false, ""}} {
		out := t.TempDir()
		list := filepath.Join(out, "list")
		dst := "oci:" + filepath.Join(out, "dst")
		if _, err := run(t, "optimize", "--runtime", testenv.Tool(t, "runc"), "--wait-line", "READY", "--cmd", cmd,
			"--trace-out", list, "--ranges="+map[bool]string{true: "true", false: "false"}[tc.ranges], "oci:"+src, dst); err != nil {
			t.Fatalf("optimize --ranges=%v: %v", tc.ranges, err)
		}
		f, err := os.Open(list)
		if err != nil {
			t.Fatal(err)
		}
		parsed, err := prefetchlist.Read(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		rs := parsed.Ranges["/data/big"]
		var n int64
		for _, r := range rs {
			n += r.End - r.Start
		}
		if got := len(rs) > 0; got != tc.ranges || n > 2<<20 {
			t.Errorf("--ranges=%v: --trace-out has ranges %v for /data/big (8 MiB, 64 KiB read)", tc.ranges, rs)
		}
		loc, err := imageref.Parse(dst, false)
		if err != nil {
			t.Fatal(err)
		}
		a, cleanup, err := loc.Read(context.Background(), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		m, err := a.Image.Manifest()
		cleanup()
		if err != nil {
			t.Fatal(err)
		}
		if got := m.Layers[0].Annotations[prefetchlist.LayerAnnotation]; !strings.HasPrefix(got, tc.want) || (tc.want == "") != (got == "") {
			t.Errorf("--ranges=%v: layer annotation %q, want %q...", tc.ranges, got, tc.want)
		}
	}
}
