package fs_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/lazysnap/lazysnap/internal/testenv"
)

// TestOverlayOfLayers stacks three FUSE-mounted layers with the kernel's
// overlayfs and checks that whiteouts hide and opaque directories mask
// what the lower layers hold.
func TestOverlayOfLayers(t *testing.T) {
	testenv.RequireFUSE(t)
	reg := testenv.StartRegistry(t)
	layers := []*builtLayer{
		buildLayer(t, []tentry{
			dir("a/", 0o755), text("a/x", "x\n"), text("a/y", "y\n"),
			dir("b/", 0o755), text("b/z", "z\n"),
			dir("c/", 0o755), text("c/keep", "keep\n"),
			dir("d/", 0o755), text("d/old", "old\n"),
			dir("e/", 0o755), dir("e/f/", 0o755), text("e/f/g", "g\n"),
		}),
		buildLayer(t, []tentry{
			dir("a/", 0o755), {name: "a/.wh.x", typ: '0', mode: 0o644},
			dir("b/", 0o755), {name: "b/.wh..wh..opq", typ: '0', mode: 0o644}, text("b/new", "new\n"),
			dir("c/", 0o755), text("c/added", "added\n"),
		}),
		buildLayer(t, []tentry{
			dir("d/", 0o755), {name: "d/.wh.old", typ: '0', mode: 0o644},
			dir("e/", 0o700), {name: "e/.wh..wh..opq", typ: '0', mode: 0o644},
			text("top", "top\n"),
		}),
	}
	ref := push(t, reg.Host, "overlay/app:v1", layers...)
	f := newFS(t)
	var lowers []string
	for _, l := range layers {
		lowers = append([]string{mount(t, f, ref, l)}, lowers...) // upper-most first
	}
	merged := t.TempDir()
	if err := unix.Mount("overlay", merged, "overlay", unix.MS_RDONLY, "lowerdir="+strings.Join(lowers, ":")); err != nil {
		t.Fatalf("mounting overlay: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(merged, 0); err != nil {
			t.Errorf("unmounting overlay: %v", err)
		}
	})
	want := map[string][]string{
		".": {"a", "b", "c", "d", "e", "top"},
		"a": {"y"},
		"b": {"new"},
		"c": {"added", "keep"},
		"d": nil,
		"e": nil,
	}
	for d, names := range want {
		ents, err := os.ReadDir(filepath.Join(merged, d))
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range ents {
			got = append(got, e.Name())
		}
		if !slices.Equal(got, names) {
			t.Errorf("overlay %s holds %q, want %q", d, got, names)
		}
	}
	for p, content := range map[string]string{"a/y": "y\n", "b/new": "new\n", "c/keep": "keep\n", "top": "top\n"} {
		if b, err := os.ReadFile(filepath.Join(merged, p)); err != nil || string(b) != content {
			t.Errorf("overlay %s = %q (%v), want %q", p, b, err, content)
		}
	}
	for _, p := range []string{"a/x", "b/z", "d/old", "e/f"} {
		if _, err := os.Lstat(filepath.Join(merged, p)); !os.IsNotExist(err) {
			t.Errorf("overlay %s: %v, want it hidden", p, err)
		}
	}
	if st, err := os.Stat(filepath.Join(merged, "e")); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("overlay e: %v %v, want the upper layer's mode 0700", st.Mode(), err)
	}
}
