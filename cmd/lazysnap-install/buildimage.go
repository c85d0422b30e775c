package main

import (
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/lazysnap/lazysnap/install/image"
)

func newBuildImageCommand() *cobra.Command {
	var (
		ref      string
		binaries string
		busybox  string
		insecure bool
	)
	cmd := &cobra.Command{
		Use:   "build-image --push REF --binaries DIR",
		Short: "Build the DaemonSet's image from static binaries, without a container engine, and push it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			img, err := image.Build(
				image.WithBinary("lazysnap", filepath.Join(binaries, "lazysnap")),
				image.WithBinary("lazysnap-install", filepath.Join(binaries, "lazysnap-install")),
				image.WithBusybox(busybox),
			)
			if err != nil {
				return err
			}
			if err := image.Push(cmd.Context(), ref, img, insecure); err != nil {
				return err
			}
			digest, err := img.Digest()
			if err != nil {
				return err
			}
			fmt.Printf("pushed %s@%s\n", ref, digest)
			return nil
		},
	}
	cmd.Flags().StringVar(&ref, "push", "", "image reference to push to (required)")
	cmd.Flags().StringVar(&binaries, "binaries", "bin", "directory holding static lazysnap and lazysnap-install binaries")
	cmd.Flags().StringVar(&busybox, "busybox", "/bin/busybox", "a static busybox, for nsenter and sh in the pod")
	cmd.Flags().BoolVar(&insecure, "insecure", false, "allow a plain-HTTP registry")
	_ = cmd.MarkFlagRequired("push")
	return cmd
}
