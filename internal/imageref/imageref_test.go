package imageref

import (
	"archive/tar"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/lazysnap/lazysnap/internal/testenv"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in, kind, path, tag, str string
	}{
		{"oci:/srv/layout", "oci", "/srv/layout", "", "oci:/srv/layout"},
		{"oci:/srv/layout:v1", "oci", "/srv/layout", "v1", "oci:/srv/layout:v1"},
		{"oci:./a:b/c", "oci", "./a:b/c", "", "oci:./a:b/c"}, // ":b/c" is part of a path
		{"oci-archive:img.tar:v2", "oci-archive", "img.tar", "v2", "oci-archive:img.tar:v2"},
		{"docker-archive:d.tar:reg.io/app:v1", "docker-archive", "d.tar:reg.io/app", "v1", "docker-archive:d.tar:reg.io/app:v1"},
		{"reg.io/app:v1", "registry", "", "", "reg.io/app:v1"},
	} {
		l, err := Parse(tc.in, false)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.in, err)
			continue
		}
		if l.kind != tc.kind || l.path != tc.path || l.tag != tc.tag || l.String() != tc.str {
			t.Errorf("Parse(%q) = %+v (%s)", tc.in, l, l)
		}
	}
	for _, bad := range []string{"oci:", "docker-archive:", "UPPER/case:x"} {
		if _, err := Parse(bad, false); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("Parse(%q) = %v, want ErrInvalidArgument", bad, err)
		}
	}
}

func testImage(t *testing.T) v1.Image {
	t.Helper()
	img, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// TestRoundTrip writes an image to each kind of location and reads it back
// with the same digest.
func TestRoundTrip(t *testing.T) {
	ctx := context.Background()
	img := testImage(t)
	want, _ := img.Digest()
	dir := t.TempDir()
	reg := testenv.StartRegistry(t)
	for _, loc := range []string{
		"oci:" + filepath.Join(dir, "layout") + ":v1",
		"oci-archive:" + filepath.Join(dir, "image.tar"),
		"docker-archive:" + filepath.Join(dir, "docker.tar"),
		reg.Ref("app:v1"),
	} {
		l, err := Parse(loc, true)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Write(ctx, Artifact{Image: img}); err != nil {
			t.Fatalf("writing %s: %v", loc, err)
		}
		a, cleanup, err := l.Read(ctx, t.TempDir())
		if err != nil {
			t.Fatalf("reading %s: %v", loc, err)
		}
		got, err := a.Digest()
		cleanup()
		// A docker archive stores the config and layers, not the manifest,
		// so only its config survives as it was.
		if l.kind == "docker-archive" {
			got, _ = a.Image.ConfigName()
			want, _ := img.ConfigName()
			if got != want {
				t.Errorf("%s: config %s, want %s", loc, got, want)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("%s: digest %s (%v), want %s", loc, got, err, want)
		}
	}
}

func TestLayoutTags(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "layout")
	for _, tag := range []string{"a", "b"} {
		l, _ := Parse("oci:"+path+":"+tag, false)
		if err := l.Write(ctx, Artifact{Image: testImage(t)}); err != nil {
			t.Fatal(err)
		}
	}
	untagged, _ := Parse("oci:"+path, false)
	if _, _, err := untagged.Read(ctx, t.TempDir()); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("reading a two-image layout without a tag: %v, want ErrInvalidArgument", err)
	}
	missing, _ := Parse("oci:"+path+":c", false)
	if _, _, err := missing.Read(ctx, t.TempDir()); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("reading a missing tag: %v, want ErrNotFound", err)
	}
	notLayout := t.TempDir()
	l, _ := Parse("oci:"+notLayout, false)
	if err := l.Write(ctx, Artifact{Image: testImage(t)}); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Errorf("writing over a directory that is no layout: %v, want ErrAlreadyExists", err)
	}
}

func TestDockerArchiveRefusesIndex(t *testing.T) {
	idx := mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: testImage(t)})
	path := filepath.Join(t.TempDir(), "d.tar")
	l, _ := Parse("docker-archive:"+path, false)
	if err := l.Write(context.Background(), Artifact{Index: idx}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("writing an index to a docker archive: %v, want ErrInvalidArgument", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed write left %s: %v", path, err)
	}
}

// TestArchiveEscape: an oci-archive entry naming a path outside the
// archive is refused, and nothing is written outside the temp dir.
func TestArchiveEscape(t *testing.T) {
	path := filepath.Join(t.TempDir(), "evil.tar")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(f)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "../escaped", Mode: 0o644, Size: 1})
	tw.Write([]byte("x"))
	tw.Close()
	f.Close()
	tmp := t.TempDir()
	l, _ := Parse("oci-archive:"+path, false)
	os.MkdirAll(filepath.Join(tmp, "work"), 0o755)
	if _, _, err := l.Read(context.Background(), filepath.Join(tmp, "work")); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("escaping entry: %v, want ErrInvalidArgument", err)
	}
	if _, err := os.Stat(filepath.Join(tmp, "escaped")); err == nil {
		t.Error("the entry was written outside the archive's directory")
	}
}

func TestAtomicFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out")
	boom := errors.New("boom")
	if err := AtomicFile(path, func(f *os.File) error { f.WriteString("half"); return boom }); !errors.Is(err, boom) {
		t.Fatalf("AtomicFile = %v, want boom", err)
	}
	if left, _ := os.ReadDir(filepath.Dir(path)); len(left) != 0 {
		t.Fatalf("a failed fill left %v", left)
	}
	if err := AtomicFile(path, func(f *os.File) error { _, err := f.WriteString("whole"); return err }); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "whole" {
		t.Fatalf("read %q, %v", b, err)
	}
}
