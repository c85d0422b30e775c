// Command lazysnap-install installs lazysnap on a host and wires it into
// containerd, and removes it again. It is used both by script/install.sh on
// plain hosts and, as the DaemonSet's entrypoint, on Kubernetes nodes.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "lazysnap-install:", err)
		os.Exit(1)
	}
}

// run builds the command tree; each subcommand lives in its own file.
func run(ctx context.Context, args []string) error {
	root := &cobra.Command{
		Use:           "lazysnap-install",
		Short:         "Install lazysnap on a host and configure containerd to use it",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(
		newInstallCommand(),
		newUninstallCommand(),
		newRunCommand(),
		newHealthCommand(),
		newSuperviseCommand(),
		newBuildImageCommand(),
	)
	root.SetArgs(args)
	return root.ExecuteContext(ctx)
}
