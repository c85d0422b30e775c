package fs_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/opencontainers/go-digest"

	lfs "github.com/lazysnap/lazysnap/fs"
	"github.com/lazysnap/lazysnap/internal/testenv"
)

// forgeTOC rewrites the TOC of layer l with edit and returns the layer with
// the new TOC (and so new TOC and blob digests): what a hostile image
// publisher can do, since only the manifest vouches for the TOC.
func forgeTOC(t *testing.T, l *builtLayer, edit func(*estargz.JTOC)) *builtLayer {
	t.Helper()
	data, err := os.ReadFile(l.path)
	if err != nil {
		t.Fatal(err)
	}
	gz := new(estargz.GzipDecompressor)
	_, tocOff, _, err := gz.ParseFooter(data[len(data)-estargz.FooterSize:])
	if err != nil {
		t.Fatal(err)
	}
	toc, _, err := gz.ParseTOC(bytes.NewReader(data[tocOff : len(data)-estargz.FooterSize]))
	if err != nil {
		t.Fatal(err)
	}
	edit(toc)
	var out bytes.Buffer
	out.Write(data[:tocOff])
	tocDigest, err := estargz.NewGzipCompressorWithLevel(1).WriteTOCAndFooter(&out, tocOff, toc, nil)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "forged.esgz")
	if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return &builtLayer{path: path, digest: digest.FromBytes(out.Bytes()), size: int64(out.Len()), tocDigest: tocDigest, entries: l.entries}
}

// poisonLayers returns an honest layer holding lib/libc.so and a forged one
// whose TOC claims that file's digest and size for a file of its own bytes,
// every chunk of which verifies against the forged TOC's chunk digests.
func poisonLayers(t *testing.T) (honest, forged *builtLayer, libc, evil tentry) {
	libc = reg("lib/libc.so", 3<<20, 1)
	evil = reg("lib/libc.so", libc.size, 666)
	honest = buildLayer(t, []tentry{dir("lib/", 0o755), libc})
	sum := libc.sha256()
	claimed := digest.NewDigestFromEncoded(digest.SHA256, hex.EncodeToString(sum[:]))
	forged = forgeTOC(t, buildLayer(t, []tentry{dir("lib/", 0o755), evil}), func(toc *estargz.JTOC) {
		for _, e := range toc.Entries {
			if e.Name == libc.name && e.Type == "reg" {
				e.Digest = claimed.String()
				return
			}
		}
		t.Fatal("no lib/libc.so in the forged layer's TOC")
	})
	return honest, forged, libc, evil
}

func readMounted(t *testing.T, mp, name string) []byte {
	t.Helper()
	got, err := os.ReadFile(filepath.Join(mp, name))
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// TestCachePoisoningAcrossImages: a layer whose TOC claims another image's
// file digest over its own bytes, read first, must not make the other
// image's file read those bytes: in the same FS, and in a new FS over the
// same cache (fused restarted after the hostile layer's process died).
func TestCachePoisoningAcrossImages(t *testing.T) {
	testenv.RequireFUSE(t)
	reg := testenv.StartRegistry(t)
	honest, forged, libc, evil := poisonLayers(t)
	honestRef := push(t, reg.Host, "victim/app:v1", honest)
	forgedRef := push(t, reg.Host, "attacker/app:v1", forged)
	want := expected(t, libc, 0, libc.size)
	evilBytes := expected(t, evil, 0, evil.size)

	t.Run("same FS", func(t *testing.T) {
		f := newFS(t)
		if got := readMounted(t, mount(t, f, forgedRef, forged), libc.name); !bytes.Equal(got, evilBytes) {
			t.Fatal("the forged layer does not read its own bytes")
		}
		if got := readMounted(t, mount(t, f, honestRef, honest), libc.name); !bytes.Equal(got, want) {
			t.Errorf("the honest layer read %d bytes not its own (the forged layer's: %v)", len(got), bytes.Equal(got, evilBytes))
		}
	})
	t.Run("fused killed and restarted", func(t *testing.T) {
		cacheDir, mp := t.TempDir(), t.TempDir()
		readInKilledProcess(t, cacheDir, mp, labels(forgedRef, forged), libc.name)
		f := newFS(t, lfs.WithCacheDir(cacheDir))
		if got := readMounted(t, mount(t, f, honestRef, honest), libc.name); !bytes.Equal(got, want) {
			t.Errorf("the honest layer read %d bytes not its own (the forged layer's: %v)", len(got), bytes.Equal(got, evilBytes))
		}
	})
}

// Environment of the helper process of readInKilledProcess.
const (
	envPoisonCache  = "LAZYSNAP_TEST_POISON_CACHE"
	envPoisonMount  = "LAZYSNAP_TEST_POISON_MOUNT"
	envPoisonLabels = "LAZYSNAP_TEST_POISON_LABELS"
	envPoisonFile   = "LAZYSNAP_TEST_POISON_FILE"
)

// readInKilledProcess mounts the layer of labels in another process with a
// cache in cacheDir, reads name through the mount, and kills the process
// (as a crashed or killed fused: no unmount, no cache close, nothing
// dropped), then detaches its dead mount.
func readInKilledProcess(t *testing.T, cacheDir, mp string, labels map[string]string, name string) {
	t.Helper()
	enc, err := json.Marshal(labels)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestPoisonHelperProcess$")
	cmd.Env = append(os.Environ(), envPoisonCache+"="+cacheDir, envPoisonMount+"="+mp,
		envPoisonLabels+"="+string(enc), envPoisonFile+"="+name)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
		if err := syscall.Unmount(mp, syscall.MNT_DETACH); err != nil {
			t.Errorf("detaching the killed process's mount: %v", err)
		}
	}()
	line, err := bufio.NewReader(out).ReadString('\n')
	if line != "read\n" {
		t.Fatalf("helper process: %q, %v", line, err)
	}
}

// TestPoisonHelperProcess is the process readInKilledProcess kills: it
// mounts, reads, says so and waits.
func TestPoisonHelperProcess(t *testing.T) {
	cacheDir := os.Getenv(envPoisonCache)
	if cacheDir == "" {
		t.Skip("helper process of TestCachePoisoningAcrossImages")
	}
	var labels map[string]string
	if err := json.Unmarshal([]byte(os.Getenv(envPoisonLabels)), &labels); err != nil {
		t.Fatal(err)
	}
	f, err := lfs.New(lfs.WithCacheDir(cacheDir), lfs.WithResolver(testResolver()))
	if err != nil {
		t.Fatal(err)
	}
	mp := os.Getenv(envPoisonMount)
	if err := f.Mount(context.Background(), mp, labels); err != nil {
		t.Fatal(err)
	}
	if _, err := os.ReadFile(filepath.Join(mp, os.Getenv(envPoisonFile))); err != nil {
		t.Fatal(err)
	}
	fmt.Println("read")
	select {}
}
