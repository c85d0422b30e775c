package testenv

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// debianFormatVersion is part of the Debian cache key.
const debianFormatVersion = "1"

// DebianImage pushes a Debian bookworm image built as a Dockerfile would:
// a `mmdebstrap --variant=minbase` layer, then one layer per package set
// (`apt-get install` in a chroot over overlayfs; the upper dir is the
// layer). Layers are cached under CacheDir()/debian, so only the first run
// needs the Debian mirror and a few minutes.
func DebianImage(t testing.TB, reg *Registry, repoTag string, packageSets ...[]string) *Image {
	t.Helper()
	RequireRoot(t)
	layers, err := debianLayers(packageSets)
	if err != nil {
		t.Fatalf("building Debian layers: %v", err)
	}
	img, err := pushLayerFiles(reg.Ref(repoTag), layers)
	if err != nil {
		t.Fatalf("pushing Debian image: %v", err)
	}
	return img
}

// debianLayers returns the gzip layer files, building them when not cached.
func debianLayers(packageSets [][]string) ([]string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "v%s bookworm minbase\n", debianFormatVersion)
	for _, set := range packageSets {
		fmt.Fprintln(h, strings.Join(set, " "))
	}
	dir := filepath.Join(CacheDir(), "debian", hex.EncodeToString(h.Sum(nil))[:32])
	files := make([]string, len(packageSets)+1)
	for i := range files {
		files[i] = filepath.Join(dir, fmt.Sprintf("layer%d.tar.gz", i))
	}
	if _, err := os.Stat(filepath.Join(dir, "complete")); err == nil {
		return files, nil
	}
	if err := buildDebianLayers(dir, packageSets); err != nil {
		return nil, err
	}
	return files, nil
}

func buildDebianLayers(dir string, packageSets [][]string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating cache dir: %w", err)
	}
	work, err := os.MkdirTemp(dir, ".work-")
	if err != nil {
		return fmt.Errorf("creating work dir: %w", err)
	}
	defer os.RemoveAll(work)
	base := filepath.Join(work, "layer0")
	if err := runLogged("mmdebstrap", "--variant=minbase", "--mode=root", "bookworm", base); err != nil {
		return err
	}
	if err := tarDirGzip(base, filepath.Join(dir, "layer0.tar.gz")); err != nil {
		return err
	}
	lowers := []string{base}
	for i, set := range packageSets {
		upper, err := aptInstallLayer(work, i+1, lowers, set)
		if err != nil {
			return err
		}
		if err := tarDirGzip(upper, filepath.Join(dir, fmt.Sprintf("layer%d.tar.gz", i+1))); err != nil {
			return err
		}
		lowers = append([]string{upper}, lowers...)
	}
	return os.WriteFile(filepath.Join(dir, "complete"), nil, 0o644)
}

// aptInstallLayer installs packages over the stacked lowers (top first) and
// returns the overlay upper dir holding just the changes.
func aptInstallLayer(work string, n int, lowers []string, packages []string) (string, error) {
	upper := filepath.Join(work, fmt.Sprintf("layer%d", n))
	wdir := filepath.Join(work, fmt.Sprintf("work%d", n))
	merged := filepath.Join(work, fmt.Sprintf("merged%d", n))
	for _, d := range []string{upper, wdir, merged} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", fmt.Errorf("creating %s: %w", d, err)
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", strings.Join(lowers, ":"), upper, wdir)
	if err := syscall.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		return "", fmt.Errorf("mounting overlay for layer %d: %w", n, err)
	}
	defer func() { _ = UnmountUnder(merged) }()
	if err := chrootMounts(merged); err != nil {
		return "", err
	}
	script := "export DEBIAN_FRONTEND=noninteractive; apt-get update -q && " +
		"apt-get install -y -q --no-install-recommends " + strings.Join(packages, " ") +
		" && apt-get clean && rm -rf /var/lib/apt/lists/*"
	if err := runLogged("chroot", merged, "/bin/sh", "-c", script); err != nil {
		return "", err
	}
	if err := UnmountUnder(merged); err != nil {
		return "", err
	}
	return upper, nil
}

// chrootMounts gives the chroot /proc, /dev and the host's DNS config (bind
// mounts: they leave nothing in the upper dir but their mount points, which
// already exist in the base layer).
func chrootMounts(root string) error {
	binds := []struct{ src, dst string }{{"/dev", "dev"}, {"/etc/resolv.conf", "etc/resolv.conf"}}
	if err := syscall.Mount("proc", filepath.Join(root, "proc"), "proc", 0, ""); err != nil {
		return fmt.Errorf("mounting proc: %w", err)
	}
	for _, b := range binds {
		dst := filepath.Join(root, b.dst)
		if _, err := os.Stat(dst); err != nil {
			continue // no mount point in the base layer: skip rather than add one
		}
		if err := syscall.Mount(b.src, dst, "", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
			return fmt.Errorf("bind-mounting %s: %w", b.src, err)
		}
	}
	return nil
}

func runLogged(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w\n%s", strings.Join(args, " "), err, tail(out, 3000))
	}
	return nil
}

// pushLayerFiles pushes an image of the gzip layer files (lowest first)
// with a shell as its command.
func pushLayerFiles(ref string, files []string) (*Image, error) {
	out := &Image{Ref: ref, Files: map[string]string{}}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	for _, f := range files {
		layer, err := tarball.LayerFromOpener(openFile(f), tarball.WithMediaType(types.OCILayer))
		if err != nil {
			return nil, fmt.Errorf("layer %s: %w", f, err)
		}
		size, err := layer.Size()
		if err != nil {
			return nil, fmt.Errorf("layer %s: %w", f, err)
		}
		out.CompressedSize += size
		if img, err = mutate.Append(img, mutate.Addendum{Layer: layer, History: v1.History{CreatedBy: filepath.Base(f)}}); err != nil {
			return nil, fmt.Errorf("appending %s: %w", f, err)
		}
	}
	img, err := withRunConfig(img, []string{"/bin/sh"})
	if err != nil {
		return nil, err
	}
	return out, push(img, out)
}
