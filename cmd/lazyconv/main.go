// Command lazyconv converts container images to eStargz or zstd:chunked so
// that lazysnap can start them before they are pulled, and verifies
// converted images.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

const locationsHelp = `Images are named by:
  HOST/REPO:TAG or HOST/REPO@DIGEST   a registry (--plain-http for plain HTTP)
  oci:DIR[:TAG]                       an OCI image layout directory
  oci-archive:FILE[:TAG]              a tar of an OCI image layout
  docker-archive:FILE[:REF]           a "docker save" archive
Registry credentials come from the docker config (~/.docker/config.json).`

// globals are the flags every command shares.
type globals struct {
	plainHTTP bool
	quiet     bool
	tmpDir    string
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCommand().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "lazyconv:", err)
		os.Exit(1)
	}
}

func newRootCommand() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "lazyconv",
		Short:         "Convert container images to lazily pullable eStargz or zstd:chunked images",
		Long:          "lazyconv converts container images to eStargz or zstd:chunked for lazysnap.\n\n" + locationsHelp,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRun: func(*cobra.Command, []string) {
			level := slog.LevelInfo
			if g.quiet {
				level = slog.LevelWarn
			}
			slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})))
		},
	}
	root.PersistentFlags().BoolVar(&g.plainHTTP, "plain-http", false, "talk plain HTTP to registries")
	root.PersistentFlags().BoolVarP(&g.quiet, "quiet", "q", false, "print no progress, only warnings and errors")
	root.PersistentFlags().StringVar(&g.tmpDir, "tmp-dir", "", "directory for temporary files (default $TMPDIR)")
	root.AddCommand(newConvertCommand(g), newVerifyCommand(g), newOptimizeCommand())
	return root
}
