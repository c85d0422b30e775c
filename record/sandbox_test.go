package record

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/lazysnap/lazysnap/internal/testenv"
)

func TestSandboxAppliesWhiteoutsAndKeepsImageIntact(t *testing.T) {
	testenv.RequireRoot(t)
	img, err := mutate.AppendLayers(empty.Image,
		tarLayer(t, entry{name: "d/"}, entry{name: "d/gone", body: "x"}, entry{name: "d/kept", body: "lower"},
			entry{name: "o/"}, entry{name: "o/hidden", body: "x"}),
		tarLayer(t, entry{name: "d/"}, entry{name: "d/.wh.gone"}, entry{name: "d/kept", body: "upper"},
			entry{name: "o/"}, entry{name: "o/.wh..wh..opq"}, entry{name: "o/new", body: "n"}),
	)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := newSandbox(context.Background(), img, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := sb.close(); err != nil {
			t.Error(err)
		}
	}()
	if got := listFiles(t, sb.lower); !slices.Equal(got, []string{"d/kept", "o/new"}) {
		t.Errorf("extracted files %q, want d/kept and o/new", got)
	}
	if b, _ := os.ReadFile(filepath.Join(sb.merged, "d/kept")); string(b) != "upper" {
		t.Errorf("d/kept holds %q, want the upper layer's", b)
	}
	// The workload writes to the overlay; the extracted image is unchanged.
	if err := os.WriteFile(filepath.Join(sb.merged, "d/kept"), []byte("written"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(sb.lower, "d/kept")); string(b) != "upper" {
		t.Errorf("write through the overlay changed the image: %q", b)
	}
}

func listFiles(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			files = append(files, rel)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func TestRecorderReportsOverlayOpensInOrder(t *testing.T) {
	testenv.RequireRoot(t)
	img, err := mutate.AppendLayers(empty.Image, tarLayer(t, entry{name: "x", body: "x"}, entry{name: "y", body: "y"},
		entry{name: "dir/"}))
	if err != nil {
		t.Fatal(err)
	}
	sb, err := newSandbox(context.Background(), img, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer sb.close()
	rec, err := startRecorder(sb.merged)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"y", "dir", "x", "y"} {
		f, err := os.Open(filepath.Join(sb.merged, name))
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	// Opens of the extracted image itself, outside the overlay, are not seen.
	if _, err := os.ReadFile(filepath.Join(sb.lower, "x")); err != nil {
		t.Fatal(err)
	}
	got, err := rec.finish()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{filepath.Join(sb.merged, "y"), filepath.Join(sb.merged, "x")}
	if !slices.Equal(got, want) {
		t.Errorf("recorded %q, want %q (files only, first open, in order)", got, want)
	}
	if tr := imageFiles(got, sb, slog.New(slog.DiscardHandler)); !slices.Equal(tr, []string{"/y", "/x"}) {
		t.Errorf("image paths %q, want /y /x", tr)
	}
}
