// Package image builds the lazysnap installer image without a container
// engine: one layer holding the project's static binaries and a static
// busybox (the pod enters the host's namespaces with its nsenter applet), on
// an empty base, with go-containerregistry. `lazysnap-install build-image`
// (`make image`) uses it.
package image

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"runtime"
	"sort"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Entrypoint returns the image's entrypoint: install, then report health.
func Entrypoint() []string { return []string{"/lazysnap-install", "run"} }

// busyboxApplets returns the commands the installer needs inside the pod,
// as links to busybox: nsenter to reach the host's systemd, sh for the
// supervised mode's scripts.
func busyboxApplets() []string { return []string{"nsenter", "sh"} }

// Option configures Build.
type Option func(*options)

type options struct {
	files    map[string]string // image path -> local path
	busybox  string
	platform v1.Platform
}

// defaultOptions: no files, no busybox, the platform this binary runs on.
func defaultOptions() options {
	return options{
		files:    map[string]string{},
		platform: v1.Platform{OS: "linux", Architecture: runtime.GOARCH},
	}
}

// WithBinary adds the executable at localPath to the image as /<name>.
// The default is no binaries; Build requires "lazysnap" and
// "lazysnap-install".
func WithBinary(name, localPath string) Option {
	return func(o *options) { o.files[name] = localPath }
}

// WithBusybox adds a static busybox as /bin/busybox with links for nsenter
// and sh. The default is "" (none): the pod then cannot reach the host's
// systemd, so `make image` always passes one.
func WithBusybox(localPath string) Option { return func(o *options) { o.busybox = localPath } }

// WithPlatform sets the image's OS and architecture, which must match the
// binaries'. The default is linux on the builder's architecture.
func WithPlatform(p v1.Platform) Option { return func(o *options) { o.platform = p } }

// Build returns the installer image.
func Build(opts ...Option) (v1.Image, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	for _, required := range []string{"lazysnap", "lazysnap-install"} {
		if o.files[required] == "" {
			return nil, fmt.Errorf("image needs the %s binary: %w", required, errdefs.ErrInvalidArgument)
		}
	}
	layerTar, err := buildLayer(o)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("building layer: %w", err)
	}
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	img, err := mutate.AppendLayers(base, layer)
	if err != nil {
		return nil, fmt.Errorf("adding layer: %w", err)
	}
	return withConfig(img, o.platform)
}

func withConfig(img v1.Image, p v1.Platform) (v1.Image, error) {
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("reading image config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
	cf.Config.Entrypoint = Entrypoint()
	cf.Config.Env = []string{"PATH=/bin"}
	cf.Config.Labels = map[string]string{
		"org.opencontainers.image.title":  "lazysnap-installer",
		"org.opencontainers.image.source": "https://github.com/lazysnap/lazysnap",
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("setting image config: %w", err)
	}
	return img, nil
}

// buildLayer writes the layer's tar: binaries at /, busybox and its links
// in /bin. Entries carry no timestamps or owners from the build machine,
// so the same binaries give the same layer digest.
func buildLayer(o options) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	names := make([]string, 0, len(o.files))
	for n := range o.files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := addFile(tw, n, o.files[n]); err != nil {
			return nil, err
		}
	}
	if o.busybox != "" {
		if err := addBusybox(tw, o.busybox); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("writing layer: %w", err)
	}
	return buf.Bytes(), nil
}

func addFile(tw *tar.Writer, imagePath, localPath string) error {
	data, err := os.ReadFile(localPath)
	if err != nil {
		return fmt.Errorf("reading %s for the image: %w", localPath, err)
	}
	hdr := &tar.Header{Name: imagePath, Mode: 0o755, Size: int64(len(data)), Typeflag: tar.TypeReg, Format: tar.FormatPAX}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("writing %s: %w", imagePath, err)
	}
	if _, err := tw.Write(data); err != nil {
		return fmt.Errorf("writing %s: %w", imagePath, err)
	}
	return nil
}

func addBusybox(tw *tar.Writer, localPath string) error {
	if err := tw.WriteHeader(&tar.Header{Name: "bin/", Mode: 0o755, Typeflag: tar.TypeDir, Format: tar.FormatPAX}); err != nil {
		return fmt.Errorf("writing bin/: %w", err)
	}
	if err := addFile(tw, "bin/busybox", localPath); err != nil {
		return err
	}
	for _, applet := range busyboxApplets() {
		hdr := &tar.Header{Name: path.Join("bin", applet), Linkname: "busybox", Mode: 0o777, Typeflag: tar.TypeSymlink, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("writing bin/%s: %w", applet, err)
		}
	}
	return nil
}

// Push pushes img to ref with the credentials of the local docker config.
// insecure allows a plain-HTTP registry.
func Push(ctx context.Context, ref string, img v1.Image, insecure bool) error {
	var nameOpts []name.Option
	if insecure {
		nameOpts = append(nameOpts, name.Insecure)
	}
	r, err := name.ParseReference(ref, nameOpts...)
	if err != nil {
		return fmt.Errorf("parsing image reference %q: %w: %w", ref, errdefs.ErrInvalidArgument, err)
	}
	if err := remote.Write(r, img, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
		return fmt.Errorf("pushing %s: %w", ref, err)
	}
	return nil
}
