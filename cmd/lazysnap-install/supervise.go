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
	var (
		pidFile   string
		cgroup    string
		parentPID int
	)
	cmd := &cobra.Command{
		Use:   "supervise --pid-file FILE -- COMMAND [ARG...]",
		Short: "Run a command and restart it when it exits (the service manager where there is no systemd)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cgroup != "" {
				joinOwnCgroup(cgroup, parentPID)
			}
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
	cmd.Flags().StringVar(&cgroup, "cgroup", "", "move into this cgroup (below --cgroup-parent-pid's, in every hierarchy) before starting the command, out of the installer pod's")
	cmd.Flags().IntVar(&parentPID, "cgroup-parent-pid", install.DefaultCgroupParentPID, "the process whose cgroup --cgroup is created in")
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

// joinOwnCgroup moves the supervisor, and so what it starts, into its own
// cgroup. A failure is logged, not fatal: lazysnap inside the pod's cgroup
// still serves, it only dies with the pod.
func joinOwnCgroup(name string, parentPID int) {
	dirs, err := install.MoveToOwnCgroup(os.Getpid(), name, parentPID)
	if err != nil {
		slog.Warn("could not move lazysnap into its own cgroup; it stays in the one it was started in", "joined", dirs, "err", err)
		return
	}
	slog.Info("moved into lazysnap's own cgroup", "dirs", dirs)
}
