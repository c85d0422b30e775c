package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/lazysnap/lazysnap/convert"
	"github.com/lazysnap/lazysnap/internal/imageref"
	"github.com/lazysnap/lazysnap/prefetchlist"
	"github.com/spf13/cobra"
)

type convertFlags struct {
	format      string
	platform    string
	prioritize  string
	concurrency int
	chunkSize   int
	level       int
}

const convertHelp = `Convert the image SRC into DST, every layer rebuilt as eStargz (or
zstd:chunked with --format zstd:chunked). An image index is converted platform
by platform (all of them, or the --platform one). Layers already in the wanted
format are kept as they are, so converting twice changes nothing. The same
input and options always give the same digests. Nothing is written to DST
unless the whole conversion succeeds. The digest of DST is printed on stdout.

--prioritize FILE names the files a workload reads first, in the order it reads
them: one path per line, absolute or relative to the image root; blank lines
and lines starting with '#' are ignored (lazysnap's access trace is in this
format). Each file goes first in the layer that provides it in the final root
filesystem (symlinks are followed to the file read), before the prefetch
landmark, so that a snapshotter fetches them all with one request. Paths the
image does not have are warned about and skipped. A file of 1 MiB or more
whose "#@ranges" line (lazysnap's traces record the parts of large files a
start-up reads) covers less than 90% of it stays in its place instead, and
its ranges go into the layer's annotation
containerd.io/snapshot/lazysnap.prefetch-ranges, which lazysnap prefetches;
files that annotation has no room for (containerd's 4096 bytes per label) are
placed first whole.

`

func newConvertCommand(g *globals) *cobra.Command {
	f := &convertFlags{}
	cmd := &cobra.Command{
		Use:   "convert SRC DST",
		Short: "Convert an image to eStargz or zstd:chunked",
		Long:  convertHelp + locationsHelp,
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runConvert(cmd, g, f, args[0], args[1])
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.format, "format", string(convert.FormatEStargz), `layer format: "estargz" or "zstd:chunked"`)
	fl.StringVar(&f.platform, "platform", "", "convert only this platform of an index (os/arch[/variant])")
	fl.StringVar(&f.prioritize, "prioritize", "", "file listing the paths to place first, in access order")
	fl.IntVar(&f.concurrency, "concurrency", runtime.GOMAXPROCS(0), "layers converted at once")
	fl.IntVar(&f.chunkSize, "chunk-size", convert.DefaultChunkSize, "chunk size in bytes for large files (0: estargz's default, 4 MiB)")
	fl.IntVar(&f.level, "compression-level", 0, "compression level (0: 6 for gzip, 3 for zstd)")
	return cmd
}

func (f *convertFlags) options(g *globals) ([]convert.Option, error) {
	format, err := convert.ParseFormat(f.format)
	if err != nil {
		return nil, err
	}
	opts := []convert.Option{
		convert.WithFormat(format),
		convert.WithConcurrency(f.concurrency),
		convert.WithChunkSize(f.chunkSize),
		convert.WithWorkDir(g.tmpDir),
		convert.WithWarnFunc(slog.Warn),
		convert.WithProgress(newProgress(os.Stderr, g.quiet)),
	}
	if f.level != 0 {
		opts = append(opts, convert.WithCompressionLevel(f.level))
	}
	if f.platform != "" {
		p, err := v1.ParsePlatform(f.platform)
		if err != nil {
			return nil, fmt.Errorf("--platform: %w", err)
		}
		opts = append(opts, convert.WithPlatform(p))
	}
	if f.prioritize != "" {
		file, err := os.Open(f.prioritize)
		if err != nil {
			return nil, fmt.Errorf("--prioritize: %w", err)
		}
		defer file.Close()
		list, err := prefetchlist.Read(file)
		if err != nil {
			return nil, fmt.Errorf("--prioritize: %w", err)
		}
		for _, r := range list.Rejected {
			slog.Warn("skipping a line of the prioritized list", "file", f.prioritize, "line", r.Line, "text", r.Text, "reason", r.Reason)
		}
		opts = append(opts, convert.WithPrioritizedFiles(list.Paths), convert.WithPrioritizedRanges(list.Ranges))
	}
	return opts, nil
}

func runConvert(cmd *cobra.Command, g *globals, f *convertFlags, srcArg, dstArg string) error {
	ctx := cmd.Context()
	src, err := imageref.Parse(srcArg, g.plainHTTP)
	if err != nil {
		return err
	}
	dst, err := imageref.Parse(dstArg, g.plainHTTP)
	if err != nil {
		return err
	}
	opts, err := f.options(g)
	if err != nil {
		return err
	}
	in, cleanup, err := src.Read(ctx, g.tmpDir)
	if err != nil {
		return err
	}
	defer cleanup()
	return convertAndWrite(ctx, cmd.OutOrStdout(), in, src, dst, opts)
}

// convertAndWrite converts in with opts, writes it to dst and prints its
// digest on out.
func convertAndWrite(ctx context.Context, out io.Writer, in imageref.Artifact, src, dst *imageref.Location, opts []convert.Option) error {
	c, err := convert.New(opts...)
	if err != nil {
		return err
	}
	defer c.Close()
	var res imageref.Artifact
	if in.Index != nil {
		res.Index, err = c.Index(ctx, in.Index)
	} else {
		res.Image, err = c.Image(ctx, in.Image)
	}
	if err != nil {
		return fmt.Errorf("converting %s: %w", src, err)
	}
	if err := dst.Write(ctx, res); err != nil {
		return fmt.Errorf("writing %s: %w", dst, err)
	}
	d, err := res.Digest()
	if err != nil {
		return err
	}
	slog.Info("converted", "src", src.String(), "dst", dst.String(), "digest", d.String())
	fmt.Fprintln(out, d)
	return nil
}
