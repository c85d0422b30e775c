package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/lazysnap/lazysnap/internal/testenv"
)

// TestBuildAndPush pushes the image to the real registry and reads it back
// as a node would pull it: config, entrypoint and the layer's files.
func TestBuildAndPush(t *testing.T) {
	reg := testenv.StartRegistry(t)
	bins := t.TempDir()
	files := map[string][]byte{
		"lazysnap":         []byte("lazysnap daemon stand-in"),
		"lazysnap-install": []byte("installer stand-in"),
	}
	for n, data := range files {
		if err := os.WriteFile(filepath.Join(bins, n), data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	busybox := "/bin/busybox" // Debian's busybox-static
	if _, err := os.Stat(busybox); err != nil {
		busybox = testenv.Tool(t, "crane") // any static binary stands in
	}
	img, err := Build(
		WithBinary("lazysnap", filepath.Join(bins, "lazysnap")),
		WithBinary("lazysnap-install", filepath.Join(bins, "lazysnap-install")),
		WithBusybox(busybox),
	)
	if err != nil {
		t.Fatal(err)
	}
	ref := reg.Ref("lazysnap/lazysnap-installer:test")
	if err := Push(context.Background(), ref, img, true); err != nil {
		t.Fatal(err)
	}

	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	pulled, err := remote.Image(r)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := pulled.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cf.Config.Entrypoint, Entrypoint()) || cf.OS != "linux" {
		t.Errorf("config: entrypoint %q, os %q", cf.Config.Entrypoint, cf.OS)
	}
	layers, err := pulled.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers = %d, %v; want 1", len(layers), err)
	}
	got := readLayer(t, layers[0])
	wantBusybox, _ := os.ReadFile(busybox)
	want := map[string]string{
		"lazysnap":         "-rwxr-xr-x " + string(files["lazysnap"]),
		"lazysnap-install": "-rwxr-xr-x " + string(files["lazysnap-install"]),
		"bin/":             "drwxr-xr-x ",
		"bin/busybox":      "-rwxr-xr-x " + string(wantBusybox),
		"bin/nsenter":      "-> busybox",
		"bin/sh":           "-> busybox",
	}
	if !reflect.DeepEqual(got, want) {
		for k := range want {
			if got[k] != want[k] {
				t.Errorf("layer entry %s differs", k)
			}
		}
		t.Errorf("layer has %d entries, want %d", len(got), len(want))
	}
}

// readLayer maps each tar entry to its mode and content (or link target).
func readLayer(t *testing.T, layer interface {
	Uncompressed() (io.ReadCloser, error)
}) map[string]string {
	t.Helper()
	rc, err := layer.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	out := map[string]string{}
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Typeflag == tar.TypeSymlink {
			out[hdr.Name] = "-> " + hdr.Linkname
			continue
		}
		var content bytes.Buffer
		if _, err := io.Copy(&content, tr); err != nil {
			t.Fatal(err)
		}
		out[hdr.Name] = hdr.FileInfo().Mode().String() + " " + content.String()
	}
}

func TestBuildRequiresBinaries(t *testing.T) {
	if _, err := Build(WithBinary("lazysnap", "/bin/true")); err == nil {
		t.Fatal("Build without lazysnap-install succeeded")
	}
}
