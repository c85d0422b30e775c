package main

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/lazysnap/lazysnap/internal/imageref"
	"github.com/lazysnap/lazysnap/internal/testenv"
)

// run runs lazyconv with args and returns its stdout.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	root := newRootCommand()
	root.SetArgs(append([]string{"--quiet", "--tmp-dir", t.TempDir()}, args...))
	root.SetOut(&out)
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

// testImage makes a one-layer image of name -> content files.
func testImage(t *testing.T, files map[string]string) v1.Image {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range sortedNames(files) {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: n, Mode: 0o644, Size: int64(len(files[n]))}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(files[n]))
	}
	tw.Close()
	b := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (ioReadCloser, error) { return nopCloser{bytes.NewReader(b)}, nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func writeOCI(t *testing.T, img v1.Image, tag string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "src")
	s := "oci:" + dir
	if tag != "" {
		s += ":" + tag
	}
	loc, err := imageref.Parse(s, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := loc.Write(context.Background(), imageref.Artifact{Image: img}); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestConvertLocations(t *testing.T) {
	src := writeOCI(t, testImage(t, map[string]string{"etc/a": "a", "usr/bin/b": "b"}), "v1")
	out := t.TempDir()
	for _, dst := range []string{
		"oci:" + filepath.Join(out, "layout") + ":v1-esgz",
		"oci-archive:" + filepath.Join(out, "image.tar"),
		"docker-archive:" + filepath.Join(out, "docker.tar"),
	} {
		digest, err := run(t, "convert", "oci:"+src+":v1", dst)
		if err != nil {
			t.Fatalf("convert to %s: %v", dst, err)
		}
		report, err := run(t, "verify", dst)
		if err != nil {
			t.Fatalf("verify %s: %v", dst, err)
		}
		if !strings.HasPrefix(report, "image ") || !strings.Contains(report, "toc=sha256:") {
			t.Fatalf("verify %s printed %q", dst, report)
		}
		if !strings.HasPrefix(digest, "sha256:") {
			t.Fatalf("convert printed %q", digest)
		}
	}
}

func TestBadInputLeavesDestinationUntouched(t *testing.T) {
	src := writeOCI(t, testImage(t, map[string]string{"etc/../../escape": "x"}), "")
	reg := testenv.StartRegistry(t)
	out := t.TempDir()
	for _, dst := range []string{
		"oci:" + filepath.Join(out, "layout"),
		"oci-archive:" + filepath.Join(out, "image.tar"),
		"docker-archive:" + filepath.Join(out, "docker.tar"),
		reg.Ref("app:bad"),
	} {
		_, err := run(t, "--plain-http", "convert", "oci:"+src, dst)
		if err == nil || !strings.Contains(err.Error(), `entry "etc/../../escape"`) || !strings.Contains(err.Error(), "layer sha256:") {
			t.Fatalf("convert to %s: got %v, want an error naming the layer and entry", dst, err)
		}
	}
	if left, _ := os.ReadDir(out); len(left) != 0 {
		t.Fatalf("left behind in the destination directory: %v", left)
	}
	ref, _ := name.ParseReference(reg.Ref("app:bad"), name.Insecure)
	if _, err := remote.Head(ref); err == nil {
		t.Fatal("the registry has the tag after a failed conversion")
	}
}

func TestRegistryPlainHTTP(t *testing.T) {
	reg := testenv.StartRegistry(t)
	ref, _ := name.ParseReference(reg.Ref("app:v1"), name.Insecure)
	if err := remote.Write(ref, testImage(t, map[string]string{"etc/a": "a", "usr/bin/sh": "sh"})); err != nil {
		t.Fatal(err)
	}
	prio := filepath.Join(t.TempDir(), "prio")
	// As `lazysnap trace export` writes it: the ranges read of a file are
	// accepted, and the file placed whole.
	os.WriteFile(prio, []byte("# trace\n/usr/bin/sh\n#@ranges 0-2\n"), 0o644)
	if _, err := run(t, "--plain-http", "convert", "--prioritize", prio, reg.Ref("app:v1"), reg.Ref("app:esgz")); err != nil {
		t.Fatal(err)
	}
	report, err := run(t, "--plain-http", "verify", reg.Ref("app:esgz"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(report, "prioritized=1") {
		t.Fatalf("verify printed %q, want one prioritized file", report)
	}
	// An unconverted image fails verification.
	if _, err := run(t, "--plain-http", "verify", reg.Ref("app:v1")); err == nil {
		t.Fatal("verify passed an image that is not eStargz")
	}
}
