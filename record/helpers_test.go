package record

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/lazysnap/lazysnap/internal/testenv"
)

// entry is one tar entry of a test layer: a directory (name ends in "/"), a
// symlink (link set) or a regular file.
type entry struct {
	name, body, link string
	mode             int64
}

func tarLayer(t *testing.T, entries ...entry) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name, Mode: e.mode, ModTime: time.Unix(1700000000, 0)}
		switch {
		case strings.HasSuffix(e.name, "/"):
			hdr.Typeflag, hdr.Mode = tar.TypeDir, 0o755
		case e.link != "":
			hdr.Typeflag, hdr.Linkname, hdr.Mode = tar.TypeSymlink, e.link, 0o777
		default:
			hdr.Typeflag, hdr.Size = tar.TypeReg, int64(len(e.body))
			if hdr.Mode == 0 {
				hdr.Mode = 0o644
			}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// busyboxLayer holds the host's static busybox as /bin/busybox, with sh,
// cat, sleep, echo, true and dd linked to it.
func busyboxLayer(t *testing.T) v1.Layer {
	t.Helper()
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Skipf("needs busybox-static at /bin/busybox: %v", err)
	}
	es := []entry{{name: "bin/"}, {name: "bin/busybox", body: string(bb), mode: 0o755}, {name: "tmp/"}}
	for _, applet := range []string{"sh", "cat", "sleep", "echo", "true", "dd"} {
		es = append(es, entry{name: "bin/" + applet, link: "busybox"})
	}
	return tarLayer(t, es...)
}

// scriptImage is busybox, four data files and /app/start.sh running script,
// its entrypoint.
func scriptImage(t *testing.T, script string) v1.Image {
	t.Helper()
	app := tarLayer(t,
		entry{name: "app/"},
		entry{name: "app/start.sh", body: "#!/bin/sh\n" + script, mode: 0o755},
		entry{name: "data/"},
		entry{name: "data/a", body: "file a\n"},
		entry{name: "data/b", body: "file b\n"},
		entry{name: "data/c", body: "file c\n"},
		entry{name: "data/unread", body: "never read\n"},
	)
	return appImage(t, app)
}

// appImage is busybox and app, whose /app/start.sh is the entrypoint.
func appImage(t *testing.T, app v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, busyboxLayer(t), app)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Config.Entrypoint = []string{"/app/start.sh"}
	cf.Config.Env = []string{"PATH=/bin"}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// syncBuffer is a bytes.Buffer safe to read while a workload writes it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// record runs img with the real runc in a private work dir, checks that the
// work dir is left empty, and returns the result.
func record(t *testing.T, img v1.Image, opts ...Option) (*Result, string) {
	t.Helper()
	testenv.RequireRoot(t)
	work := t.TempDir()
	out := &syncBuffer{}
	opts = append([]Option{WithRuntime(testenv.Tool(t, "runc")), WithWorkDir(work), WithOutput(out)}, opts...)
	res, err := Run(context.Background(), img, opts...)
	if err != nil {
		t.Fatalf("Run: %v\noutput:\n%s", err, out.String())
	}
	left, err := os.ReadDir(work)
	if err != nil || len(left) != 0 {
		t.Errorf("work dir not cleaned up: %v %v", left, err)
	}
	return res, out.String()
}

// indexOf returns the position of p in paths, or -1.
func indexOf(paths []string, p string) int {
	return slices.Index(paths, p)
}
