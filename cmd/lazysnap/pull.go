package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	dockerconfig "github.com/containerd/containerd/v2/core/remotes/docker/config"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/snapshotters"
	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/cobra"
)

// pullOptions are the flags of `lazysnap pull`; the defaults match ctr's so
// the command is a drop-in for `ctr image pull --snapshotter lazysnap`.
type pullOptions struct {
	containerdFlags
	snapshotter string
	hostsDir    string
	plainHTTP   bool
	platform    string
}

func newPullCommand() *cobra.Command {
	var o pullOptions
	cmd := &cobra.Command{
		Use:   "pull REF",
		Short: "Pull an image through containerd, letting lazysnap mount eStargz layers lazily",
		Long: "pull fetches REF with the containerd client and unpacks it into the snapshotter with the " +
			"remote-snapshot labels set, so layers lazysnap can mount from the registry are not downloaded.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return pull(cmd.Context(), cmd.OutOrStdout(), args[0], o)
		},
	}
	f := cmd.Flags()
	addContainerdFlags(cmd, &o.containerdFlags)
	f.StringVar(&o.snapshotter, "snapshotter", "lazysnap", "snapshotter to unpack into")
	f.StringVar(&o.hostsDir, "hosts-dir", "/etc/containerd/certs.d", "registry hosts directory (hosts.toml per HOST:PORT)")
	f.BoolVar(&o.plainHTTP, "plain-http", false, "talk to the registry over plain HTTP")
	f.StringVar(&o.platform, "platform", "", "platform to pull (the default is containerd's own platform)")
	return cmd
}

// pull resolves, fetches and unpacks ref, then reports for each layer whether
// it was downloaded into the content store or left to the remote snapshotter.
func pull(ctx context.Context, out io.Writer, ref string, o pullOptions) error {
	client, err := containerd.New(o.address, containerd.WithDefaultNamespace(o.namespace))
	if err != nil {
		return fmt.Errorf("connecting to containerd at %s: %w", o.address, err)
	}
	defer client.Close()
	ctx = namespaces.WithNamespace(ctx, o.namespace)

	start := time.Now()
	fmt.Fprintf(out, "pulling %s (snapshotter %s)\n", ref, o.snapshotter)
	img, err := client.Pull(ctx, ref, pullRemoteOpts(ctx, out, ref, o)...)
	if err != nil {
		return fmt.Errorf("pulling %s: %w", ref, err)
	}
	if err := reportLayers(ctx, out, client, img); err != nil {
		return err
	}
	fmt.Fprintf(out, "done: %s %s in %s\n", img.Name(), img.Target().Digest, time.Since(start).Round(time.Millisecond))
	return nil
}

func pullRemoteOpts(ctx context.Context, out io.Writer, ref string, o pullOptions) []containerd.RemoteOpt {
	opts := []containerd.RemoteOpt{
		containerd.WithPullUnpack,
		containerd.WithPullSnapshotter(o.snapshotter),
		containerd.WithResolver(newResolver(ctx, o)),
		containerd.WithImageHandler(progressHandler(out)),
		// The info handler puts the image ref, layer digests and the layer
		// annotations (eStargz TOC digest) on each Prepare as labels: that is
		// what lets the snapshotter mount a layer instead of waiting for it.
		containerd.WithImageHandlerWrapper(snapshotters.AppendInfoHandlerWrapper(ref)),
	}
	if o.platform != "" {
		opts = append(opts, containerd.WithPlatform(o.platform))
	}
	return opts
}

func newResolver(ctx context.Context, o pullOptions) remotes.Resolver {
	hostOpts := dockerconfig.HostOptions{HostDir: dockerconfig.HostDirFromRoot(o.hostsDir)}
	if o.plainHTTP {
		hostOpts.DefaultScheme = "http"
	}
	return docker.NewResolver(docker.ResolverOptions{Hosts: dockerconfig.ConfigureHosts(ctx, hostOpts)})
}

// progressHandler prints one line per blob the pull fetches. Layers the
// snapshotter mounts remotely are never fetched, so they never show here.
func progressHandler(out io.Writer) images.Handler {
	return images.HandlerFunc(func(_ context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
		fmt.Fprintf(out, "  fetching %-8s %s (%s)\n", descKind(desc), desc.Digest, humanBytes(desc.Size))
		return nil, nil
	})
}

func descKind(desc ocispec.Descriptor) string {
	switch {
	case images.IsIndexType(desc.MediaType):
		return "index"
	case images.IsManifestType(desc.MediaType):
		return "manifest"
	case images.IsConfigType(desc.MediaType):
		return "config"
	case images.IsLayerType(desc.MediaType):
		return "layer"
	}
	return desc.MediaType
}

// reportLayers tells which layers were fetched: a layer whose blob is not in
// the content store after the pull was mounted remotely (lazily).
func reportLayers(ctx context.Context, out io.Writer, client *containerd.Client, img containerd.Image) error {
	manifest, err := images.Manifest(ctx, client.ContentStore(), img.Target(), img.Platform())
	if err != nil {
		return fmt.Errorf("reading manifest of %s: %w", img.Name(), err)
	}
	for _, layer := range manifest.Layers {
		state := "downloaded"
		if _, err := client.ContentStore().Info(ctx, layer.Digest); errors.Is(err, errdefs.ErrNotFound) {
			state = "remote (lazy)"
		} else if err != nil {
			return fmt.Errorf("checking layer %s: %w", layer.Digest, err)
		}
		fmt.Fprintf(out, "  layer %s (%s): %s\n", layer.Digest, humanBytes(layer.Size), state)
	}
	return nil
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
