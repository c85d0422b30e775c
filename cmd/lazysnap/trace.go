package main

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/lazysnap/lazysnap/fs/trace"
	"github.com/lazysnap/lazysnap/prefetchlist"
)

func newTraceCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "trace",
		Short: "Prefetch lists learnt from real runs: the order in which each image's files were first read",
		Long: "fused records, per image, the order in which files are first opened after mount and keeps it in\n" +
			"ROOT/traces (saved every 10 s and when the image's last layer is unmounted). Export it for\n" +
			"`lazyconv convert --prioritize FILE`.",
	}
	cmd.AddCommand(newTraceExportCommand(), newTraceListCommand())
	return cmd
}

func newTraceExportCommand() *cobra.Command {
	var root, out string
	var pf pushFlags
	cmd := &cobra.Command{
		Use:   "export IMAGE",
		Short: "Write IMAGE's trace as a prefetch list (one absolute path per line, with the byte ranges read of large files), or push it to IMAGE's repository",
		Long: "Write IMAGE's trace as a prefetch list. With --push, push it instead to IMAGE's repository as an\n" +
			"OCI artifact referring to IMAGE's manifest, where other nodes' fused find it (trace.from_registry),\n" +
			"and print the artifact's digest.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := trace.Dir(traceDir(root)).Load(args[0])
			if err != nil {
				return err
			}
			for _, w := range p.Warnings {
				fmt.Fprintln(cmd.ErrOrStderr(), "warning:", w)
			}
			if len(p.Paths) == 0 {
				fmt.Fprintln(cmd.ErrOrStderr(), "warning: the trace of", args[0], "is empty: nothing was read yet")
			}
			if pf.push {
				return pushTrace(cmd, traceDir(root), args[0], p, pf)
			}
			return writeTo(out, cmd.OutOrStdout(), func(w io.Writer) error {
				return trace.Write(w, args[0], p.Paths, prefetchlist.WithRanges(p.Ranges))
			})
		},
	}
	cmd.Flags().StringVar(&root, "root", defaultConfig().Root, "state directory of lazysnap")
	cmd.Flags().StringVarP(&out, "output", "o", "", "file to write (default standard output)")
	pf.register(cmd)
	return cmd
}

func newTraceListCommand() *cobra.Command {
	var root string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the images with a trace",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			images, err := trace.Dir(traceDir(root)).List()
			if err != nil {
				return err
			}
			for _, img := range images {
				fmt.Fprintln(cmd.OutOrStdout(), img)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&root, "root", defaultConfig().Root, "state directory of lazysnap")
	return cmd
}

// writeTo runs write on the file path, or on stdout when path is "".
func writeTo(path string, stdout io.Writer, write func(io.Writer) error) error {
	if path == "" {
		return write(stdout)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
