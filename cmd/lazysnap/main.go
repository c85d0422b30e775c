// Command lazysnap is the lazysnap daemon and its client commands: a
// containerd remote snapshotter that mounts eStargz layers lazily with FUSE.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// version names the build; `go build -ldflags "-X main.version=..."` sets
// it (upgrade tests tell two builds apart by it).
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "lazysnap:", err)
		os.Exit(1)
	}
}

// run builds the command tree and executes it. Each subcommand lives in its
// own file and is wired here, so there is no package-level command state.
func run(ctx context.Context, args []string) error {
	root := &cobra.Command{
		Use:           "lazysnap",
		Short:         "A containerd remote snapshotter that starts containers before their images are pulled",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
	}
	root.AddCommand(
		newServeCommand(),
		newFusedCommand(),
		newMountCommand(),
		newPullCommand(),
		newTraceCommand(),
		newStatusCommand(),
	)
	root.SetArgs(args)
	return root.ExecuteContext(ctx)
}
