package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/containerd/errdefs"
	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcr "github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"

	lfs "github.com/lazysnap/lazysnap/fs"
	"github.com/lazysnap/lazysnap/fs/remote"
)

// mountFlags are the flags of `lazysnap mount`.
type mountFlags struct {
	ref       string
	layer     string
	tocDigest string
	cacheDir  string
	cacheMax  int64
	hostsDir  string
	plainHTTP bool
	debug     bool
}

func newMountCommand() *cobra.Command {
	var f mountFlags
	cmd := &cobra.Command{
		Use:   "mount --ref REF --layer DIGEST DIR",
		Short: "Mount one eStargz layer lazily at DIR until interrupted",
		Long: `Mount one eStargz (or zstd:chunked) layer of an image read-only at DIR,
fetching file chunks from the registry as they are read, until SIGINT or
SIGTERM; then unmount. The TOC digest comes from --toc-digest or, if not
given, from the layer's annotation in the image manifest.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runMount(cmd.Context(), f, args[0])
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.ref, "ref", "", "image reference, e.g. registry:5000/app:v1 (required)")
	fl.StringVar(&f.layer, "layer", "", "digest of the layer blob (required)")
	fl.StringVar(&f.tocDigest, "toc-digest", "", "TOC digest of the layer (default: read from the manifest)")
	fl.StringVar(&f.cacheDir, "cache", "/var/lib/lazysnap/cache", "cache directory")
	fl.Int64Var(&f.cacheMax, "cache-max-bytes", 10<<30, "cache size bound in bytes")
	fl.StringVar(&f.hostsDir, "hosts-dir", "/etc/containerd/certs.d", "containerd hosts directory (hosts.toml per registry)")
	fl.BoolVar(&f.plainHTTP, "plain-http", false, "reach the registry over plain HTTP to read the manifest")
	fl.BoolVar(&f.debug, "debug", false, "log every FUSE request")
	_ = cmd.MarkFlagRequired("ref")
	_ = cmd.MarkFlagRequired("layer")
	return cmd
}

func runMount(ctx context.Context, f mountFlags, dir string) error {
	d, err := digest.Parse(f.layer)
	if err != nil {
		return fmt.Errorf("--layer %q: %w", f.layer, err)
	}
	toc := f.tocDigest
	if toc == "" {
		if toc, err = tocDigestFromManifest(ctx, f.ref, d, f.plainHTTP); err != nil {
			return err
		}
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	fsys, err := lfs.New(
		lfs.WithCacheDir(f.cacheDir),
		lfs.WithCacheMaxBytes(f.cacheMax),
		lfs.WithResolver(remote.NewResolver(remote.WithHostsDir(f.hostsDir))),
		lfs.WithLogger(logger),
		lfs.WithDebug(f.debug))
	if err != nil {
		return err
	}
	labels := map[string]string{
		lfs.LabelImageRef:    f.ref,
		lfs.LabelLayerDigest: d.String(),
		lfs.LabelTOCDigest:   toc,
	}
	if err := fsys.Mount(ctx, dir, labels); err != nil {
		return errors.Join(err, fsys.Close())
	}
	logger.Info("mounted; interrupt to unmount", "dir", dir)
	<-ctx.Done()
	for mp, s := range fsys.Stats() {
		logger.Info("layer stats", "mountpoint", mp, "bytes_fetched", s.BytesFetched,
			"requests", s.Requests, "cache_hits", s.CacheHits, "fetched_percent", s.FetchedPercent)
	}
	return fsys.Close()
}

// tocDigestFromManifest reads the layer's TOC digest annotation from the
// image manifest.
func tocDigestFromManifest(ctx context.Context, ref string, layer digest.Digest, plainHTTP bool) (string, error) {
	var nopts []name.Option
	if plainHTTP {
		nopts = append(nopts, name.Insecure)
	}
	r, err := name.ParseReference(ref, nopts...)
	if err != nil {
		return "", fmt.Errorf("--ref %q: %v: %w", ref, err, errdefs.ErrInvalidArgument)
	}
	img, err := ggcr.Image(r, ggcr.WithContext(ctx), ggcr.WithAuthFromKeychain(authn.DefaultKeychain))
	if err != nil {
		return "", fmt.Errorf("reading the manifest of %s: %w", ref, err)
	}
	m, err := img.Manifest()
	if err != nil {
		return "", fmt.Errorf("reading the manifest of %s: %w", ref, err)
	}
	for _, l := range m.Layers {
		if l.Digest.String() != layer.String() {
			continue
		}
		if toc := l.Annotations[estargz.TOCJSONDigestAnnotation]; toc != "" {
			return toc, nil
		}
		return "", fmt.Errorf("layer %s of %s has no %s annotation (not eStargz?); pass --toc-digest: %w",
			layer, ref, estargz.TOCJSONDigestAnnotation, errdefs.ErrInvalidArgument)
	}
	return "", fmt.Errorf("image %s has no layer %s: %w", ref, layer, errdefs.ErrNotFound)
}
