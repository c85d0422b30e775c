package main

import (
	"errors"

	"github.com/spf13/cobra"
)

func newMountCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "mount",
		Short: "not implemented yet",
		RunE: func(cmd *cobra.Command, args []string) error {
			return errors.New("mount: not implemented yet")
		},
	}
}
