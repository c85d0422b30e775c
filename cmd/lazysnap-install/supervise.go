package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/lazysnap/lazysnap/install"
)

func newSuperviseCommand() *cobra.Command {
	var pidFile string
	cmd := &cobra.Command{
		Use:   "supervise --pid-file FILE -- COMMAND [ARG...]",
		Short: "Run a command and restart it when it exits (the service manager where there is no systemd)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if pidFile != "" {
				if err := writePIDFile(pidFile); err != nil {
					return err
				}
				defer os.Remove(pidFile)
			}
			return install.Supervise(cmd.Context(), slog.Default(), args)
		},
	}
	cmd.Flags().StringVar(&pidFile, "pid-file", "", "where to record this supervisor's PID, for uninstall to stop it")
	return cmd
}

func writePIDFile(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("creating pid file dir: %w", err)
	}
	if err := os.WriteFile(path, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return fmt.Errorf("writing pid file: %w", err)
	}
	return nil
}
