package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
)

func newHealthCommand() *cobra.Command {
	var (
		f       hostFlags
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "health",
		Short: "Exit 0 if lazysnap serve answers containerd's snapshots API on its socket and lazysnap fused its /healthz",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			// One look, no history: a process not answering now fails.
			if err := f.health(0).Check(ctx); err != nil {
				return err
			}
			fmt.Println("lazysnap is healthy")
			return nil
		},
	}
	f.register(cmd.Flags())
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Second, "how long to wait for an answer")
	return cmd
}
