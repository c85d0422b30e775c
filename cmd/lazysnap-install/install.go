package main

import (
	"github.com/spf13/cobra"

	"github.com/lazysnap/lazysnap/install"
)

func newInstallCommand() *cobra.Command {
	var f installFlags
	cmd := &cobra.Command{
		Use:   "install --binary PATH",
		Short: "Install lazysnap and merge it into containerd's config (idempotent)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts, err := f.options()
			if err != nil {
				return err
			}
			rep, err := install.New(opts...).Install(cmd.Context())
			if err != nil {
				return err
			}
			printReport("install", rep)
			return nil
		},
	}
	f.register(cmd.Flags())
	return cmd
}

func newUninstallCommand() *cobra.Command {
	var (
		f     hostFlags
		purge bool
		stay  bool
	)
	cmd := &cobra.Command{
		Use:   "uninstall",
		Short: "Restore containerd's config and remove lazysnap",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts := append(f.options(), install.WithPurge(purge))
			rep, err := install.New(opts...).Uninstall(cmd.Context())
			if err != nil {
				return err
			}
			printReport("uninstall", rep)
			if stay {
				// A DaemonSet pod must not exit, or it is restarted.
				<-cmd.Context().Done()
			}
			return nil
		},
	}
	f.register(cmd.Flags())
	cmd.Flags().BoolVar(&purge, "purge", false, "also remove lazysnap's root (its cache)")
	cmd.Flags().BoolVar(&stay, "stay", false, "stay up after uninstalling, until signalled (for the uninstall DaemonSet)")
	return cmd
}
