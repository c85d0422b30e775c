package fs_test

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	lfs "github.com/lazysnap/lazysnap/fs"
	"github.com/lazysnap/lazysnap/fs/trace"
	"github.com/lazysnap/lazysnap/internal/testenv"
)

// TestTraceOrder mounts two layers of one image, opens files through FUSE
// in a known order (some twice, some in both layers) and finds that order,
// deduplicated, in the saved trace; a second FS resumes it.
func TestTraceOrder(t *testing.T) {
	testenv.RequireFUSE(t)
	registry := testenv.StartRegistry(t)
	base := buildLayer(t, []tentry{dir("etc/", 0o755), text("etc/os-release", "debian\n"), text("etc/passwd", "root\n")})
	app := buildLayer(t, []tentry{dir("app/", 0o755), text("app/main", "run\n"), text("app/conf", "x\n"),
		dir("etc/", 0o755), text("etc/passwd", "root\napp\n")})
	ref := push(t, registry.Host, "trace/app:v1", base, app)
	dirTraces := t.TempDir()

	f := newFS(t, lfs.WithTraceDir(dirTraces))
	mpBase, mpApp := mount(t, f, ref, base), mount(t, f, ref, app)
	for _, p := range []string{
		filepath.Join(mpApp, "app/main"),
		filepath.Join(mpBase, "etc/os-release"),
		filepath.Join(mpApp, "app/main"),    // again: recorded once
		filepath.Join(mpBase, "etc/passwd"), // in both layers: recorded once
		filepath.Join(mpApp, "etc/passwd"),
		filepath.Join(mpApp, "app/conf"),
	} {
		if _, err := os.ReadFile(p); err != nil {
			t.Fatal(err)
		}
	}
	for _, mp := range []string{mpBase, mpApp} {
		if err := f.Unmount(context.Background(), mp); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"/app/main", "/etc/os-release", "/etc/passwd", "/app/conf"}
	got, err := trace.Dir(dirTraces).Load(ref)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Paths, want) || got.Image != ref || len(got.Warnings) != 0 {
		t.Fatalf("trace %+v, want paths %v of %s", got, want, ref)
	}

	// A restarted daemon continues the trace, bounded.
	g := newFS(t, lfs.WithTraceDir(dirTraces), lfs.WithTraceMaxFiles(5))
	mp := mount(t, g, ref, base)
	if _, err := os.ReadFile(filepath.Join(mp, "etc/passwd")); err != nil {
		t.Fatal(err)
	}
	if err := g.Unmount(context.Background(), mp); err != nil {
		t.Fatal(err)
	}
	if got, _ := trace.Dir(dirTraces).Load(ref); !reflect.DeepEqual(got.Paths, want) {
		t.Fatalf("resumed trace %v, want %v", got.Paths, want)
	}
}
