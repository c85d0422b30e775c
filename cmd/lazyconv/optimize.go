package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/match"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/lazysnap/lazysnap/convert"
	"github.com/lazysnap/lazysnap/internal/imageref"
	"github.com/lazysnap/lazysnap/record"
	"github.com/spf13/cobra"
)

const optimizeHelp = `Optimize runs the workload of SRC (its entrypoint and command, or --cmd)
in a sandbox built from the image itself, under runc, with no network unless
--network is given. It records, with fanotify, the image files the workload
opens until it prints a line containing --wait-line, exits, or --timeout
passes, then converts SRC into DST as "convert --prioritize" would, with
those files first, in the order they were opened.

Of files of 1 MiB or more it also records which parts were read, from the
page cache: their pages are dropped before the workload starts, and those
resident when it stops were read (page aligned, and widened by the kernel's
read-ahead). A file whose ranges cover less than 90% of it then stays in its
place and only those ranges are prefetched, as with convert's "#@ranges".
Files the workload wrote, files of which nothing was read, and every file
when the pages cannot be dropped (--tmp-dir on tmpfs) are taken whole.
--ranges=false records none and takes every file whole.

A workload that exits non-zero, or never prints the wait line, is warned
about; the files recorded until then are used. With nothing recorded, SRC is
converted without prioritized files. An index is recorded with its --platform
image (default: this machine's) and converted like convert does.

--cmd takes a JSON array (exec form, ["/app","--serve"]) or a string run with
/bin/sh -c, as a Dockerfile's CMD does; it replaces the entrypoint and the
command. --trace-out FILE writes the recorded list (the --prioritize format,
with the ranges).
Needs root (mounts, fanotify) and runc (--runtime).

`

// optimizeFlags are convert's flags (but --prioritize) and the workload's.
type optimizeFlags struct {
	convert  convertFlags
	cmd      string
	env      []string
	waitLine string
	timeout  time.Duration
	network  bool
	runtime  string
	traceOut string
	ranges   bool
}

func newOptimizeCommand() *cobra.Command {
	f := &optimizeFlags{}
	cmd := &cobra.Command{
		Use:   "optimize SRC DST",
		Short: "Record the files a workload reads at start-up and convert with them first",
		Long:  optimizeHelp + locationsHelp,
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runOptimize(cmd, globalsOf(cmd), f, args[0], args[1])
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.convert.format, "format", string(convert.FormatEStargz), `layer format: "estargz" or "zstd:chunked"`)
	fl.StringVar(&f.convert.platform, "platform", "", "record (and convert only) this platform of an index (os/arch[/variant])")
	fl.IntVar(&f.convert.concurrency, "concurrency", runtime.GOMAXPROCS(0), "layers converted at once")
	fl.IntVar(&f.convert.chunkSize, "chunk-size", convert.DefaultChunkSize, "chunk size in bytes for large files (0: estargz's default, 4 MiB)")
	fl.IntVar(&f.convert.level, "compression-level", 0, "compression level (0: 6 for gzip, 3 for zstd)")
	fl.StringVar(&f.cmd, "cmd", "", `command replacing the entrypoint and command: a JSON array, or a shell command`)
	fl.StringArrayVar(&f.env, "env", nil, "KEY=VALUE added to the workload's environment (repeatable)")
	fl.StringVar(&f.waitLine, "wait-line", "", "stop recording at the first output line containing this text")
	fl.DurationVar(&f.timeout, "timeout", 10*time.Second, "stop recording after this long")
	fl.BoolVar(&f.network, "network", false, "give the workload the host's network")
	fl.StringVar(&f.runtime, "runtime", "runc", "runc binary running the workload")
	fl.StringVar(&f.traceOut, "trace-out", "", "also write the recorded list to this file")
	fl.BoolVar(&f.ranges, "ranges", true, "record the parts of large files read (from the page cache) and prefetch only those")
	return cmd
}

// globalsOf reads the root command's persistent flags, so that this command
// needs nothing from its parent but the flags themselves.
func globalsOf(cmd *cobra.Command) *globals {
	g := &globals{}
	g.plainHTTP, _ = cmd.Flags().GetBool("plain-http")
	g.quiet, _ = cmd.Flags().GetBool("quiet")
	g.tmpDir, _ = cmd.Flags().GetString("tmp-dir")
	return g
}

func runOptimize(cmd *cobra.Command, g *globals, f *optimizeFlags, srcArg, dstArg string) error {
	ctx := cmd.Context()
	src, err := imageref.Parse(srcArg, g.plainHTTP)
	if err != nil {
		return err
	}
	dst, err := imageref.Parse(dstArg, g.plainHTTP)
	if err != nil {
		return err
	}
	recOpts, err := f.recordOptions(g)
	if err != nil {
		return err
	}
	convOpts, err := f.convert.options(g)
	if err != nil {
		return err
	}
	in, cleanup, err := src.Read(ctx, g.tmpDir)
	if err != nil {
		return err
	}
	defer cleanup()
	trace, err := recordArtifact(ctx, in, f.convert.platform, recOpts)
	if err != nil {
		return fmt.Errorf("recording %s: %w", src, err)
	}
	if err := f.writeTrace(trace); err != nil {
		return err
	}
	if len(trace.Paths) == 0 {
		slog.Warn("nothing recorded; converting without prioritized files")
	}
	convOpts = append(convOpts, convert.WithPrioritizedFiles(trace.Paths), convert.WithPrioritizedRanges(trace.Ranges))
	return convertAndWrite(ctx, cmd.OutOrStdout(), in, src, dst, convOpts)
}

func (f *optimizeFlags) recordOptions(g *globals) ([]record.Option, error) {
	var output io.Writer = os.Stderr // stdout is for the digest
	if g.quiet {
		output = io.Discard
	}
	opts := []record.Option{
		record.WithEnv(f.env...),
		record.WithWaitLine(f.waitLine),
		record.WithTimeout(f.timeout),
		record.WithNetwork(f.network),
		record.WithRuntime(f.runtime),
		record.WithWorkDir(g.tmpDir),
		record.WithOutput(output),
		record.WithReadRanges(f.ranges),
	}
	if f.cmd != "" {
		argv, err := parseCmd(f.cmd)
		if err != nil {
			return nil, err
		}
		opts = append(opts, record.WithCommand(argv...))
	}
	return opts, nil
}

// parseCmd reads --cmd as a Dockerfile reads CMD: a JSON array is the
// argv, anything else a shell command.
func parseCmd(s string) ([]string, error) {
	if !strings.HasPrefix(strings.TrimSpace(s), "[") {
		return []string{"/bin/sh", "-c", s}, nil
	}
	var argv []string
	if err := json.Unmarshal([]byte(s), &argv); err != nil {
		return nil, fmt.Errorf("--cmd %q: not a JSON array of strings: %w: %w", s, err, errdefs.ErrInvalidArgument)
	}
	if len(argv) == 0 {
		return nil, fmt.Errorf("--cmd: empty array: %w", errdefs.ErrInvalidArgument)
	}
	return argv, nil
}

// recordArtifact records the workload of an image, or of an index's image
// for platform (this machine's when empty).
func recordArtifact(ctx context.Context, a imageref.Artifact, platform string, opts []record.Option) (record.Trace, error) {
	img := a.Image
	if a.Index != nil {
		var err error
		if img, err = platformImage(a.Index, platform); err != nil {
			return record.Trace{}, err
		}
	}
	res, err := record.Run(ctx, img, opts...)
	if err != nil {
		return record.Trace{}, err
	}
	return res.Trace, nil
}

func platformImage(idx v1.ImageIndex, platform string) (v1.Image, error) {
	p := &v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	if platform != "" {
		var err error
		if p, err = v1.ParsePlatform(platform); err != nil {
			return nil, fmt.Errorf("--platform: %w: %w", err, errdefs.ErrInvalidArgument)
		}
	}
	imgs, err := partial.FindImages(idx, match.Platforms(*p))
	if err != nil {
		return nil, fmt.Errorf("finding the %s image: %w", p, err)
	}
	if len(imgs) == 0 {
		return nil, fmt.Errorf("the index has no %s image to run: %w", p, errdefs.ErrNotFound)
	}
	return imgs[0], nil
}

func (f *optimizeFlags) writeTrace(t record.Trace) error {
	if f.traceOut == "" {
		return nil
	}
	err := imageref.AtomicFile(f.traceOut, func(file *os.File) error {
		_, err := t.WriteTo(file)
		return err
	})
	if err != nil {
		return fmt.Errorf("--trace-out: %w", err)
	}
	return nil
}
