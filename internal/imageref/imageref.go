// Package imageref reads and writes container images wherever lazyconv's
// users keep them: a registry (REF), an OCI layout (oci:DIR[:TAG]), an OCI
// archive (oci-archive:FILE[:TAG]) or a docker archive
// (docker-archive:FILE[:REF]). Writes are atomic: nothing is visible at the
// destination until everything is written.
package imageref

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/match"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// refNameAnnotation names an image in an OCI layout's index.json.
const refNameAnnotation = "org.opencontainers.image.ref.name"

// Location is where an image is: a registry, an OCI layout, or an archive.
type Location struct {
	kind string // "registry", "oci", "oci-archive" or "docker-archive"
	ref  name.Reference
	path string
	tag  string // oci: the ref.name; docker-archive: the image reference
}

// Parse parses REF, oci:DIR[:TAG], oci-archive:FILE[:TAG] or
// docker-archive:FILE[:REF].
func Parse(s string, plainHTTP bool) (*Location, error) {
	for _, kind := range []string{"oci-archive", "docker-archive", "oci"} {
		rest, ok := strings.CutPrefix(s, kind+":")
		if !ok {
			continue
		}
		loc := &Location{kind: kind, path: rest}
		// A suffix after the last ':' is a tag unless it looks like part of a path.
		if i := strings.LastIndex(rest, ":"); i > 0 && (kind == "docker-archive" || !strings.Contains(rest[i:], "/")) {
			loc.path, loc.tag = rest[:i], rest[i+1:]
		}
		if loc.path == "" {
			return nil, fmt.Errorf("%q: empty path: %w", s, errdefs.ErrInvalidArgument)
		}
		return loc, nil
	}
	var opts []name.Option
	if plainHTTP {
		opts = append(opts, name.Insecure)
	}
	ref, err := name.ParseReference(s, opts...)
	if err != nil {
		return nil, fmt.Errorf("%q: %w: %w", s, err, errdefs.ErrInvalidArgument)
	}
	return &Location{kind: "registry", ref: ref}, nil
}

func (l *Location) String() string {
	if l.kind == "registry" {
		return l.ref.String()
	}
	if l.tag == "" {
		return l.kind + ":" + l.path
	}
	return l.kind + ":" + l.path + ":" + l.tag
}

// Artifact is an image or an index: exactly one of the two is set.
type Artifact struct {
	Image v1.Image
	Index v1.ImageIndex
}

// Digest is the digest of the image or index.
func (a Artifact) Digest() (v1.Hash, error) {
	if a.Index != nil {
		return a.Index.Digest()
	}
	return a.Image.Digest()
}

func remoteOptions(ctx context.Context) []remote.Option {
	return []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)}
}

// Read reads the image at l, unpacking an oci-archive into a private temp
// dir under tmpDir; the caller calls cleanup once done with the image.
func (l *Location) Read(ctx context.Context, tmpDir string) (a Artifact, cleanup func(), err error) {
	tmp, err := os.MkdirTemp(tmpDir, "lazyconv-src-")
	if err != nil {
		return Artifact{}, nil, err
	}
	cleanup = func() { os.RemoveAll(tmp) }
	if a, err = l.read(ctx, tmp); err != nil {
		cleanup()
		return Artifact{}, nil, err
	}
	return a, cleanup, nil
}

// read opens what l names. tmp is a directory for unpacking archives.
func (l *Location) read(ctx context.Context, tmp string) (Artifact, error) {
	switch l.kind {
	case "registry":
		desc, err := remote.Get(l.ref, remoteOptions(ctx)...)
		if err != nil {
			return Artifact{}, fmt.Errorf("fetching %s: %w", l, err)
		}
		if desc.MediaType.IsIndex() {
			idx, err := desc.ImageIndex()
			return Artifact{Index: idx}, err
		}
		img, err := desc.Image()
		return Artifact{Image: img}, err
	case "oci":
		return readLayout(l.path, l.tag)
	case "oci-archive":
		dir, err := os.MkdirTemp(tmp, "oci-archive-")
		if err != nil {
			return Artifact{}, err
		}
		if err := untar(l.path, dir); err != nil {
			return Artifact{}, fmt.Errorf("unpacking %s: %w", l, err)
		}
		return readLayout(dir, l.tag)
	case "docker-archive":
		var tag *name.Tag
		if l.tag != "" {
			t, err := name.NewTag(l.tag)
			if err != nil {
				return Artifact{}, fmt.Errorf("%s: %w: %w", l, err, errdefs.ErrInvalidArgument)
			}
			tag = &t
		}
		img, err := tarball.ImageFromPath(l.path, tag)
		if err != nil {
			return Artifact{}, fmt.Errorf("reading %s: %w", l, err)
		}
		return Artifact{Image: img}, nil
	}
	return Artifact{}, fmt.Errorf("unknown location kind %q: %w", l.kind, errdefs.ErrInvalidArgument)
}

// readLayout opens the manifest of an OCI layout tagged tag, or its only
// manifest when tag is empty.
func readLayout(dir, tag string) (Artifact, error) {
	ii, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return Artifact{}, fmt.Errorf("reading OCI layout %s: %w", dir, err)
	}
	im, err := ii.IndexManifest()
	if err != nil {
		return Artifact{}, err
	}
	var found []v1.Descriptor
	for _, d := range im.Manifests {
		if tag == "" || d.Annotations[refNameAnnotation] == tag {
			found = append(found, d)
		}
	}
	switch {
	case len(found) == 0:
		return Artifact{}, fmt.Errorf("OCI layout %s has no image %q: %w", dir, tag, errdefs.ErrNotFound)
	case len(found) > 1:
		return Artifact{}, fmt.Errorf("OCI layout %s has %d images; name one with :TAG: %w", dir, len(found), errdefs.ErrInvalidArgument)
	}
	if found[0].MediaType.IsIndex() {
		idx, err := ii.ImageIndex(found[0].Digest)
		return Artifact{Index: idx}, err
	}
	img, err := ii.Image(found[0].Digest)
	return Artifact{Image: img}, err
}

// Write stores a at l. Nothing is visible at l until everything is written:
// a registry gets the manifest (the tag) after every blob, an OCI layout gets
// its index.json after the blobs (a new layout appears by a rename), and an
// archive is written to a temporary file renamed into place.
func (l *Location) Write(ctx context.Context, a Artifact) error {
	switch l.kind {
	case "registry":
		if a.Index != nil {
			return remote.WriteIndex(l.ref, a.Index, remoteOptions(ctx)...)
		}
		return remote.Write(l.ref, a.Image, remoteOptions(ctx)...)
	case "oci":
		return writeLayout(l.path, l.tag, a)
	case "oci-archive":
		return AtomicFile(l.path, func(f *os.File) error {
			dir, err := os.MkdirTemp(filepath.Dir(l.path), ".lazyconv-layout-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(dir)
			if err := writeLayout(filepath.Join(dir, "layout"), l.tag, a); err != nil {
				return err
			}
			return tarDir(filepath.Join(dir, "layout"), f)
		})
	case "docker-archive":
		if a.Image == nil {
			return fmt.Errorf("a docker archive holds one image, not an index: pick one with --platform: %w", errdefs.ErrInvalidArgument)
		}
		tagName := l.tag
		if tagName == "" {
			tagName = "lazyconv/image:latest"
		}
		tag, err := name.NewTag(tagName)
		if err != nil {
			return fmt.Errorf("%s: %w: %w", l, err, errdefs.ErrInvalidArgument)
		}
		return AtomicFile(l.path, func(f *os.File) error { return tarball.Write(tag, a.Image, f) })
	}
	return fmt.Errorf("unknown location kind %q: %w", l.kind, errdefs.ErrInvalidArgument)
}

func writeLayout(dir, tag string, a Artifact) error {
	var opts []layout.Option
	if tag != "" {
		opts = append(opts, layout.WithAnnotations(map[string]string{refNameAnnotation: tag}))
	}
	appendTo := func(p layout.Path) error {
		if tag == "" {
			return appendArtifact(p, a, opts)
		}
		matcher := match.Annotation(refNameAnnotation, tag)
		if a.Index != nil {
			return p.ReplaceIndex(a.Index, matcher, opts...)
		}
		return p.ReplaceImage(a.Image, matcher, opts...)
	}
	if p, err := layout.FromPath(dir); err == nil {
		return appendTo(p)
	}
	if _, err := os.Stat(dir); err == nil {
		return fmt.Errorf("%s exists and is not an OCI layout: %w", dir, errdefs.ErrAlreadyExists)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), "."+filepath.Base(dir)+".lazyconv-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	p, err := layout.Write(tmp, empty.Index)
	if err != nil {
		return err
	}
	if err := appendTo(p); err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	return os.Rename(tmp, dir)
}

func appendArtifact(p layout.Path, a Artifact, opts []layout.Option) error {
	if a.Index != nil {
		return p.AppendIndex(a.Index, opts...)
	}
	return p.AppendImage(a.Image, opts...)
}

// AtomicFile writes path through a temporary file in the same directory,
// renamed into place only when fill succeeds.
func AtomicFile(path string, fill func(*os.File) error) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".lazyconv-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	err = fill(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// tarDir writes the regular files and directories under dir as a tar.
func tarDir(dir string, w io.Writer) error {
	tw := tar.NewWriter(w)
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		hdr, err := tar.FileInfoHeader(fi, "")
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		if err := tw.WriteHeader(hdr); err != nil || !fi.Mode().IsRegular() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// untar unpacks an OCI archive: directories and regular files only, names
// kept inside dir.
func untar(file, dir string) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if !filepath.IsLocal(hdr.Name) {
			return fmt.Errorf("entry %q escapes the archive: %w", hdr.Name, errdefs.ErrInvalidArgument)
		}
		target := filepath.Join(dir, hdr.Name)
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := writeFile(target, tr); err != nil {
				return err
			}
		}
	}
}

func writeFile(path string, r io.Reader) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
