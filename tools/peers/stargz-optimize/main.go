// Command stargz-optimize makes the stargz snapshotter's optimized eStargz
// image the way its own `ctr-remote image optimize` does, from the
// published packages of github.com/containerd/stargz-snapshotter (whose cmd
// module the Go module proxy does not serve): the analyzer runs the
// workload in a container on a containerd node and records, with
// fanotify, the files it opens; nativeconverter/estargz then converts each
// layer with its recorded files first (before the prefetch landmark).
//
// The image must already be in the containerd at --address; the result is
// written as an OCI archive (tar) for the caller to push. v0.18.x is the
// last release whose main module holds the analyzer (later ones moved it to
// the cmd module), so this tool is pinned there, in a module of its own,
// while the daemon (tools/peers/stargz) is the newest release.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/images/archive"
	"github.com/containerd/containerd/v2/core/images/converter"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/platforms"
	"github.com/containerd/stargz-snapshotter/analyzer"
	"github.com/containerd/stargz-snapshotter/analyzer/fanotify/service"
	"github.com/containerd/stargz-snapshotter/estargz"
	esgzconvert "github.com/containerd/stargz-snapshotter/nativeconverter/estargz"
	"github.com/containerd/stargz-snapshotter/recorder"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// flags are the tool's settings; every default is here.
type flags struct {
	address     string
	namespace   string
	snapshotter string
	src, dst    string
	out         string
	recordOut   string
	cmd         string
	waitLine    string
	period      time.Duration
}

func parseFlags() flags {
	var f flags
	flag.StringVar(&f.address, "address", "/run/containerd/containerd.sock", "containerd socket")
	flag.StringVar(&f.namespace, "namespace", "default", "containerd namespace")
	// Empty, as upstream's default: a snapshotter named on the container
	// makes the image config's user look-up want a snapshot the analyzer
	// never creates (it mounts the image itself), so it fails.
	flag.StringVar(&f.snapshotter, "snapshotter", "", "snapshotter the analyzer unpacks the image into (default: containerd's)")
	flag.StringVar(&f.src, "src", "", "the image to optimize, already in containerd")
	flag.StringVar(&f.dst, "dst", "", "the name of the optimized image (default: src + \"-esgz-opt\")")
	flag.StringVar(&f.out, "out", "", "where to write the optimized image as an OCI archive (tar)")
	flag.StringVar(&f.recordOut, "record-out", "", "where to copy the analyzer's record (JSON lines), if set")
	flag.StringVar(&f.cmd, "cmd", "", "the workload's command, a JSON array (default: the image's)")
	flag.StringVar(&f.waitLine, "wait-line", "", "stop recording when a stdout line contains this")
	flag.DurationVar(&f.period, "period", 60*time.Second, "stop recording after this long at most")
	flag.Parse()
	if f.dst == "" {
		f.dst = f.src + "-esgz-opt"
	}
	return f
}

func main() {
	// The analyzer's fanotify helper is this binary again (/proc/self/exe
	// fanotify TARGET), in a mount namespace of its own.
	if len(os.Args) == 3 && os.Args[1] == "fanotify" {
		if err := service.Serve(os.Args[2], os.Stdin, os.Stdout); err != nil {
			fmt.Fprintf(os.Stderr, "fanotify: %v\n", err)
			os.Exit(1)
		}
		return
	}
	if err := run(parseFlags()); err != nil {
		fmt.Fprintf(os.Stderr, "stargz-optimize: %v\n", err)
		os.Exit(1)
	}
}

func run(f flags) error {
	if f.src == "" || f.out == "" {
		return errors.New("need -src and -out")
	}
	var argv []string
	if f.cmd != "" {
		if err := json.Unmarshal([]byte(f.cmd), &argv); err != nil {
			return fmt.Errorf("-cmd: not a JSON array of strings: %w", err)
		}
	}
	client, err := containerd.New(f.address)
	if err != nil {
		return fmt.Errorf("connecting to containerd: %w", err)
	}
	defer client.Close()
	ctx := namespaces.WithNamespace(context.Background(), f.namespace)
	ctx, done, err := client.WithLease(ctx)
	if err != nil {
		return fmt.Errorf("taking a lease: %w", err)
	}
	defer done(ctx)
	record, err := analyze(ctx, client, f, argv)
	if err != nil {
		return err
	}
	if err := convert(ctx, client, f, record); err != nil {
		return err
	}
	return export(ctx, client, f)
}

// analyze runs the workload as upstream's analyzer does and returns the
// record it committed to the content store.
func analyze(ctx context.Context, client *containerd.Client, f flags, argv []string) (digest.Digest, error) {
	opts := []analyzer.Option{analyzer.WithSnapshotter(f.snapshotter), analyzer.WithPeriod(f.period),
		analyzer.WithSpecOpts(specOpts(argv))}
	if f.waitLine != "" {
		opts = append(opts, analyzer.WithWaitLineOut(f.waitLine))
	}
	record, err := analyzer.Analyze(ctx, client, f.src, opts...)
	if err != nil {
		return "", fmt.Errorf("analyzing %s: %w", f.src, err)
	}
	return record, nil
}

// specOpts are the analyzer's defaults plus the workload's command and the
// host's network (the bench's workloads listen on host ports and probes
// reach them there).
func specOpts(argv []string) analyzer.SpecOpts {
	return func(img containerd.Image, rootfs string) ([]oci.SpecOpts, func() error, error) {
		opts := []oci.SpecOpts{oci.WithDefaultSpec(), oci.WithDefaultUnixDevices, oci.WithRootFSPath(rootfs),
			oci.WithImageConfig(img), oci.WithHostNamespace(specs.NetworkNamespace), oci.WithHostHostsFile,
			oci.WithHostResolvconf}
		if len(argv) > 0 {
			opts = append(opts, oci.WithProcessArgs(argv...))
		}
		return opts, func() error { return nil }, nil
	}
}

// convert makes the eStargz image f.dst from f.src, each layer with its
// recorded files first, as `ctr-remote image optimize` does.
func convert(ctx context.Context, client *containerd.Client, f flags, record digest.Digest) error {
	layerOpts, n, err := prioritized(ctx, client, f, record)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "stargz-optimize: %d files recorded\n", n)
	var ignored []string
	conv := esgzconvert.LayerConvertWithLayerAndCommonOptsFunc(layerOpts, estargz.WithAllowPrioritizeNotFound(&ignored))
	_, err = converter.Convert(ctx, client, f.dst, f.src, converter.WithLayerConvertFunc(conv),
		converter.WithDockerToOCI(true), converter.WithPlatform(platforms.DefaultStrict()))
	if err != nil {
		return fmt.Errorf("converting %s: %w", f.src, err)
	}
	return nil
}

// prioritized reads the record into per-layer options: the record names
// each file's layer by its index in the image's manifest.
func prioritized(ctx context.Context, client *containerd.Client, f flags, record digest.Digest) (map[digest.Digest][]estargz.Option, int, error) {
	cs := client.ContentStore()
	img, err := client.ImageService().Get(ctx, f.src)
	if err != nil {
		return nil, 0, fmt.Errorf("getting %s: %w", f.src, err)
	}
	manifest, err := images.Manifest(ctx, cs, img.Target, platforms.DefaultStrict())
	if err != nil {
		return nil, 0, fmt.Errorf("reading the manifest of %s: %w", f.src, err)
	}
	b, err := content.ReadBlob(ctx, cs, ocispec.Descriptor{Digest: record})
	if err != nil {
		return nil, 0, fmt.Errorf("reading the record: %w", err)
	}
	if f.recordOut != "" {
		if err := os.WriteFile(f.recordOut, b, 0o644); err != nil {
			return nil, 0, fmt.Errorf("writing the record: %w", err)
		}
	}
	paths, n, err := pathsByLayer(b, len(manifest.Layers))
	if err != nil {
		return nil, 0, err
	}
	opts := map[digest.Digest][]estargz.Option{}
	for i, l := range manifest.Layers {
		opts[l.Digest] = []estargz.Option{estargz.WithPrioritizedFiles(paths[i])}
	}
	return opts, n, nil
}

// pathsByLayer splits the record's entries (JSON values one after the
// other, in the order the files were opened) by layer index.
func pathsByLayer(b []byte, layers int) ([][]string, int, error) {
	paths := make([][]string, layers)
	dec := json.NewDecoder(bufio.NewReader(bytes.NewReader(b)))
	n := 0
	for {
		var e recorder.Entry
		if err := dec.Decode(&e); err == io.EOF {
			return paths, n, nil
		} else if err != nil {
			return nil, 0, fmt.Errorf("reading the record: %w", err)
		}
		if e.LayerIndex == nil || *e.LayerIndex < 0 || *e.LayerIndex >= layers {
			continue
		}
		paths[*e.LayerIndex] = append(paths[*e.LayerIndex], e.Path)
		n++
	}
}

// export writes f.dst as an OCI archive of the default platform.
func export(ctx context.Context, client *containerd.Client, f flags) error {
	w, err := os.Create(f.out)
	if err != nil {
		return fmt.Errorf("creating %s: %w", f.out, err)
	}
	err = client.Export(ctx, w, archive.WithImage(client.ImageService(), f.dst),
		archive.WithPlatform(platforms.DefaultStrict()))
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("exporting %s: %w", f.dst, err)
	}
	return nil
}
