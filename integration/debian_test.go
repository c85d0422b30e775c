package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lazysnap/lazysnap/internal/testenv"
)

// rootfsListing prints every entry of the root filesystem below / with its
// type and mode, owner and mtime, the size of every non-directory (a
// directory's size is its filesystem's business), and the sha256 of every
// regular file. Left out: /etc and /run themselves and the files the runtime bind-mounts
// into /etc, whose times are the container's own.
const rootfsListing = `prune='-xdev -mindepth 1 ( -path /proc -o -path /sys -o -path /dev -o -path /etc/hostname ` +
	`-o -path /etc/hosts -o -path /etc/resolv.conf ) -prune -o ! -path /etc ! -path /run'; ` +
	`find / $prune -type d -print | sort | xargs stat -c '%n %f %u:%g %Y' && ` +
	`find / $prune ! -type d -print | sort | xargs stat -c '%n %f %u:%g %s %Y' && ` +
	`find / $prune -type f -print | sort | xargs sha256sum && ` +
	`python3 -c 'print("python ready")'`

// TestDebianImage builds a Debian image the way a Dockerfile would
// (minbase, then one apt-get install layer per package set), converts it
// with a prioritized list naming files of the apt layers (whose tars list
// usr/bin/ but not usr/, the case where lazyconv must add parent
// directories), and runs it on overlayfs and lazily: both containers must
// see the same root filesystem, entry for entry, mode, owner and content.
// The first run builds the image from the Debian mirror (cached after).
func TestDebianImage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a Debian image with mmdebstrap")
	}
	e := startLazyEnv(t)
	img := testenv.DebianImage(t, e.reg, "debian:test", []string{"busybox"}, []string{"python3-minimal"})

	list := filepath.Join(t.TempDir(), "prioritized.txt")
	prioritized := "/usr/bin/python3\n/usr/lib/python3.11/os.py\n/bin/busybox\n/usr/bin/busybox\n/not/there\n"
	if err := os.WriteFile(list, []byte(prioritized), 0o644); err != nil {
		t.Fatal(err)
	}
	lazyRef := e.reg.Ref("debian:esgz")
	runBinary(t, testenv.LazyconvBin(), "convert", "--plain-http", "--prioritize", list, img.Ref, lazyRef)
	runBinary(t, testenv.LazyconvBin(), "verify", "--plain-http", lazyRef)

	e.cd.MustCtr(t, e.cd.PullArgs(img.Ref, "overlayfs")...)
	want := e.cd.MustCtr(t, e.cd.RunArgs("overlayfs", img.Ref, "debian-overlay", "/bin/sh", "-c", rootfsListing)...)
	ref := testenv.RefVia(lazyRef, e.proxy.Host)
	e.lazysnapPull(t, ref)
	if stored, total := layersInContentStore(t, e.cd, ref); stored != 0 {
		t.Errorf("%d of %d eStargz layers were downloaded by the pull; want all mounted lazily", stored, total)
	}
	got := e.run(t, ref, "debian-lazy", "/bin/sh", "-c", rootfsListing)

	if !strings.HasSuffix(strings.TrimSpace(want), "python ready") {
		t.Fatalf("overlayfs container did not finish: %s", firstLines(want, 5))
	}
	if got != want {
		t.Fatalf("lazy root filesystem differs from overlayfs:\n%s", firstDiff(want, got))
	}
	t.Logf("%d entries and checksums equal", strings.Count(want, "\n"))
}

// firstDiff returns the first differing line of two listings.
func firstDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := range max(len(w), len(g)) {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			return fmt.Sprintf("line %d:\n  overlayfs: %s\n  lazysnap:  %s", i+1, wl, gl)
		}
	}
	return "(no differing line)"
}
