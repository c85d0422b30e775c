package testenv

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"
)

// layerFormatVersion is part of the layer cache key: bump it when the tar
// layout written here changes.
const layerFormatVersion = "2"

// hostBusybox is the static busybox copied into Busybox layers.
const hostBusybox = "/bin/busybox"

// builtLayer is a gzip layer file on disk plus the sha256 of each regular
// file it holds (keyed by absolute path).
type builtLayer struct {
	Path  string            `json:"-"`
	Files map[string]string `json:"files"`
}

// layerFor returns the layer of spec from the cache dir, building it first
// if needed. Large random layers take seconds to generate and compress; the
// cache makes reruns cheap.
func layerFor(spec LayerSpec) (*builtLayer, error) {
	key, err := layerKey(spec)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(CacheDir(), "layers", key)
	bl := &builtLayer{Path: filepath.Join(dir, "layer.tar.gz")}
	if b, err := os.ReadFile(filepath.Join(dir, "files.json")); err == nil && json.Unmarshal(b, bl) == nil {
		if _, err := os.Stat(bl.Path); err == nil {
			return bl, nil
		}
	}
	return buildLayerInto(spec, dir)
}

// buildLayerInto writes the layer in a temp dir and renames it into place,
// so a concurrent or interrupted build never leaves a half-written entry.
func buildLayerInto(spec LayerSpec, dir string) (*builtLayer, error) {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return nil, fmt.Errorf("creating layer cache: %w", err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".build-")
	if err != nil {
		return nil, fmt.Errorf("creating layer build dir: %w", err)
	}
	defer os.RemoveAll(tmp)
	files, err := writeGzipLayer(spec, filepath.Join(tmp, "layer.tar.gz"))
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(&builtLayer{Files: files})
	if err != nil {
		return nil, fmt.Errorf("encoding layer index: %w", err)
	}
	if err := os.WriteFile(filepath.Join(tmp, "files.json"), b, 0o644); err != nil {
		return nil, fmt.Errorf("writing layer index: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil && !os.IsExist(err) {
		if _, statErr := os.Stat(dir); statErr != nil {
			return nil, fmt.Errorf("storing layer: %w", err)
		}
	}
	return &builtLayer{Path: filepath.Join(dir, "layer.tar.gz"), Files: files}, nil
}

func layerKey(spec LayerSpec) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "v%s\n", layerFormatVersion)
	if err := json.NewEncoder(h).Encode(spec); err != nil {
		return "", fmt.Errorf("hashing layer spec: %w", err)
	}
	if spec.Busybox {
		f, err := os.Open(hostBusybox)
		if err != nil {
			return "", fmt.Errorf("busybox-static is needed for test images: %w", err)
		}
		defer f.Close()
		if _, err := io.Copy(h, f); err != nil {
			return "", fmt.Errorf("hashing busybox: %w", err)
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:32], nil
}

// writeGzipLayer writes spec as a gzip tar to dst and returns the sha256 of
// each regular file.
func writeGzipLayer(spec LayerSpec, dst string) (map[string]string, error) {
	out, err := os.Create(dst)
	if err != nil {
		return nil, fmt.Errorf("creating layer file: %w", err)
	}
	defer out.Close()
	// BestSpeed: most generated data is random, and gzip cannot shrink it.
	zw, err := gzip.NewWriterLevel(out, gzip.BestSpeed)
	if err != nil {
		return nil, fmt.Errorf("creating gzip writer: %w", err)
	}
	tw := tar.NewWriter(zw)
	files, err := writeLayerEntries(tw, spec)
	if err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("closing tar: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("closing gzip: %w", err)
	}
	return files, out.Close()
}

func writeLayerEntries(tw *tar.Writer, spec LayerSpec) (map[string]string, error) {
	dirs := newDirWriter(tw)
	files := map[string]string{}
	if spec.Busybox {
		if err := writeBusybox(tw, dirs, files); err != nil {
			return nil, err
		}
	}
	specs := append([]FileSpec(nil), spec.Files...)
	sort.Slice(specs, func(i, j int) bool { return specs[i].Path < specs[j].Path })
	for _, f := range specs {
		if err := dirs.ensure(path.Dir(f.Path)); err != nil {
			return nil, err
		}
		sum, err := writeFile(tw, f.Path, 0o644, f.Size, f.open())
		if err != nil {
			return nil, err
		}
		files[f.Path] = sum
	}
	return files, nil
}

func writeBusybox(tw *tar.Writer, dirs *dirWriter, files map[string]string) error {
	for _, d := range []string{"/bin", "/etc", "/tmp"} {
		if err := dirs.ensure(d); err != nil {
			return err
		}
	}
	bb, err := os.Open(hostBusybox)
	if err != nil {
		return fmt.Errorf("opening busybox: %w", err)
	}
	defer bb.Close()
	st, err := bb.Stat()
	if err != nil {
		return fmt.Errorf("stat busybox: %w", err)
	}
	sum, err := writeFile(tw, "/bin/busybox", 0o755, st.Size(), bb)
	if err != nil {
		return err
	}
	files["/bin/busybox"] = sum
	for _, applet := range busyboxApplets() {
		hdr := &tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + applet, Linkname: "busybox",
			Mode: 0o777, ModTime: fixedTime()}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("writing link %s: %w", applet, err)
		}
	}
	return nil
}

// writeFile writes one regular file entry and returns its sha256.
func writeFile(tw *tar.Writer, name string, mode int64, size int64, r io.Reader) (string, error) {
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(name, "/"), Mode: mode, Size: size,
		ModTime: fixedTime()}
	if err := tw.WriteHeader(hdr); err != nil {
		return "", fmt.Errorf("writing header of %s: %w", name, err)
	}
	h := sha256.New()
	if _, err := io.CopyN(io.MultiWriter(tw, h), r, size); err != nil {
		return "", fmt.Errorf("writing %s: %w", name, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// dirWriter emits each parent directory once, before its first child, as a
// Dockerfile-built layer would.
type dirWriter struct {
	tw   *tar.Writer
	seen map[string]bool
}

func newDirWriter(tw *tar.Writer) *dirWriter {
	return &dirWriter{tw: tw, seen: map[string]bool{"/": true}}
}

func (d *dirWriter) ensure(dir string) error {
	if d.seen[dir] {
		return nil
	}
	if err := d.ensure(path.Dir(dir)); err != nil {
		return err
	}
	d.seen[dir] = true
	mode := int64(0o755)
	if dir == "/tmp" {
		mode = 0o1777
	}
	hdr := &tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(dir, "/") + "/", Mode: mode, ModTime: fixedTime()}
	if err := d.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("writing dir %s: %w", dir, err)
	}
	return nil
}

// fixedTime makes layers reproducible, so equal specs give equal digests.
func fixedTime() time.Time { return time.Unix(1700000000, 0).UTC() }

// CacheDir is where built test layers and images are kept between runs:
// $LAZYSNAP_CACHE, by default /var/cache/lazysnap-test.
func CacheDir() string {
	if d := os.Getenv("LAZYSNAP_CACHE"); d != "" {
		return d
	}
	return "/var/cache/lazysnap-test"
}
