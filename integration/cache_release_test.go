package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/lazysnap/lazysnap/convert"
	"github.com/lazysnap/lazysnap/fs/index"
	"github.com/lazysnap/lazysnap/internal/testenv"
)

// TestLazyRemovalReleasesCache pulls and runs two lazy images that share
// busybox (one layer, one mount) and one file (same content in two
// different layers, so one cache entry held by two mounts). Removing the
// first image must unmount its own layer and delete the cache entries of
// the files only it used, keeping the shared ones; removing the second
// must leave no mount and no cached byte.
func TestLazyRemovalReleasesCache(t *testing.T) {
	e := startLazyEnv(t)
	shared := testenv.FileSpec{Path: "/data/shared/blob", Size: 512 << 10, Content: testenv.Random, Seed: 7}
	a, refA := buildReleaseImage(t, e, "a", shared)
	b, refB := buildReleaseImage(t, e, "b", shared)

	e.lazysnapPull(t, refA)
	assertListing(t, a, "/data", e.run(t, refA, "release-a", testenv.ListingCommand("/data")...))
	onlyA := filesUnder(a, "/data/a")
	assertCached(t, e.ls.Root, a, append(onlyA, shared.Path))

	e.lazysnapPull(t, refB)
	assertListing(t, b, "/data", e.run(t, refB, "release-b", testenv.ListingCommand("/data")...))
	mounts := classifyMounts(t, e.ls.Root)
	if len(mounts) != 3 || mounts["/bin/busybox"] == "" || mounts["/data/a"] == "" || mounts["/data/b"] == "" {
		t.Fatalf("mounts with both images pulled: %v; want busybox, /data/a and /data/b, one each", mounts)
	}

	_, before := cacheDirBytes(t, e.ls.Root)
	t.Logf("mounts: %v; cache: %d bytes", mounts, before)
	e.cd.MustCtr(t, "image", "rm", "--sync", refA)
	if got, want := mountPoints(t, e.ls.Root), sorted(mounts["/bin/busybox"], mounts["/data/b"]); !slices.Equal(got, want) {
		t.Errorf("FUSE mounts after removing image A: %v; want busybox's and B's only %v", got, want)
	}
	if n := cachedBytes(t, e.ls.Root, a, onlyA); n != 0 {
		t.Errorf("%d cache bytes left for the files only image A used; want 0", n)
	}
	assertCached(t, e.ls.Root, b, append(filesUnder(b, "/data/b"), shared.Path, "/bin/busybox"))

	e.cd.MustCtr(t, "image", "rm", "--sync", refB)
	if left := snapshotKeys(t, e.cd, "lazysnap"); len(left) != 0 {
		t.Errorf("snapshots left after removing both images: %v", left)
	}
	if left := mountPoints(t, e.ls.Root); len(left) != 0 {
		t.Errorf("FUSE mounts left after removing both images: %v", left)
	}
	if files, n := cacheDirBytes(t, e.ls.Root); n != 0 {
		t.Errorf("cache holds %d bytes after removing both images; want 0: %v", n, firstN(files, 10))
	}
}

// buildReleaseImage builds busybox plus a layer of eight 256 KiB files
// under /data/NAME and the shared file, and converts it to eStargz.
func buildReleaseImage(t *testing.T, e *lazyEnv, name string, shared testenv.FileSpec) (*testenv.Image, string) {
	t.Helper()
	files := append(testenv.GeneratedFiles("/data/"+name, 8, 256<<10, testenv.Random), shared)
	img := testenv.BuildImage(t, e.reg, "release-"+name+":gzip", testenv.BusyboxLayer(), testenv.LayerSpec{Files: files})
	return img, testenv.RefVia(e.convert(t, img, "release-"+name+":esgz"), e.proxy.Host)
}

// filesUnder lists the regular files of img below dir.
func filesUnder(img *testenv.Image, dir string) []string {
	var out []string
	for p := range img.Files {
		if strings.HasPrefix(p, dir+"/") {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// cacheEntryPath is where the cache keeps file p of img: under its content
// key (fs/index), derived from its size and the offset, size and sha256 of
// each of its chunks as lazyconv cuts them (convert.DefaultChunkSize). A
// file of one chunk is known by its sha256; a larger one (/bin/busybox,
// which BusyboxLayer copies from the host) is cut from the host's copy.
func cacheEntryPath(t *testing.T, root string, img *testenv.Image, p string) string {
	t.Helper()
	var sum [32]byte
	if _, err := hex.Decode(sum[:], []byte(img.Files[p])); err != nil {
		t.Fatalf("sha256 of %s: %v", p, err)
	}
	size := img.Sizes[p]
	chunks := []index.Chunk{{Size: size, Digest: sum}}
	if size > convert.DefaultChunkSize {
		chunks = hostFileChunks(t, p, sum)
	}
	key := index.ContentKey(size, chunks)
	return filepath.Join(root, "cache", "files", "sha256", key.Encoded())
}

// hostFileChunks cuts the host's file p, which must have the sha256 sum
// (the image's copy), into chunks of convert.DefaultChunkSize.
func hostFileChunks(t *testing.T, p string, sum [32]byte) []index.Chunk {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil || sha256.Sum256(b) != sum {
		t.Fatalf("%s has several chunks and the host has no copy of the image's to cut (%v)", p, err)
	}
	var chunks []index.Chunk
	for off := 0; off < len(b); off += convert.DefaultChunkSize {
		part := b[off:min(len(b), off+convert.DefaultChunkSize)]
		chunks = append(chunks, index.Chunk{FileOffset: int64(off), Size: int64(len(part)), Digest: sha256.Sum256(part)})
	}
	return chunks
}

// allocatedBytes is the disk space of path (a sparse cache entry counts
// only its present ranges), 0 if it does not exist.
func allocatedBytes(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		if errors.Is(err, syscall.ENOENT) {
			return 0
		}
		t.Fatalf("stat %s: %v", path, err)
	}
	return st.Blocks * 512
}

// cachedBytes sums the allocated bytes of the cache entries of paths.
func cachedBytes(t *testing.T, root string, img *testenv.Image, paths []string) int64 {
	t.Helper()
	var n int64
	for _, p := range paths {
		n += allocatedBytes(t, cacheEntryPath(t, root, img, p))
	}
	return n
}

// assertCached checks that the cache entry of each of paths is allocated
// at least as large as the file: the file was read (or fetched) whole.
func assertCached(t *testing.T, root string, img *testenv.Image, paths []string) {
	t.Helper()
	for _, p := range paths {
		path := cacheEntryPath(t, root, img, p)
		info, err := os.Stat(path)
		if err != nil {
			t.Errorf("cache entry of %s: %v", p, err)
			continue
		}
		if got := allocatedBytes(t, path); got < info.Size() {
			t.Errorf("cache entry of %s has %d of %d bytes allocated; want it complete", p, got, info.Size())
		}
	}
}

// classifyMounts maps a marker path (/bin/busybox, /data/a, /data/b) to
// the lazysnap mount whose layer holds it, checked through the mount.
func classifyMounts(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, mp := range mountPoints(t, root) {
		for _, marker := range []string{"/bin/busybox", "/data/a", "/data/b"} {
			if _, err := os.Lstat(mp + marker); err == nil {
				out[marker] = mp
			}
		}
	}
	return out
}

// mountPoints lists the FUSE mount points below root, sorted.
func mountPoints(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	for _, m := range lazyMounts(t, root) {
		out = append(out, m.MountPoint)
	}
	slices.Sort(out)
	return out
}

// cacheDirBytes walks ROOT/cache/files and returns the files holding data
// and their total allocated bytes.
func cacheDirBytes(t *testing.T, root string) ([]string, int64) {
	t.Helper()
	var files []string
	var total int64
	err := filepath.WalkDir(filepath.Join(root, "cache", "files"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if n := allocatedBytes(t, p); n > 0 {
			files, total = append(files, p), total+n
		}
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("walking the cache: %v", err)
	}
	return files, total
}

func sorted(s ...string) []string {
	slices.Sort(s)
	return s
}

func firstN(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
