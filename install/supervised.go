package install

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
)

// supervisedService keeps lazysnap running on a host without systemd: it
// starts "lazysnap-install supervise", detached from the installer, which
// restarts "lazysnap serve" whenever it exits. containerd cannot be restarted
// generically there, so the report asks the operator to do it.
type supervisedService struct{ o *options }

// pidFile is where the supervisor records its PID, beside lazysnap's socket
// in the run directory so a reboot clears it.
func (s supervisedService) pidFile() string {
	return filepath.Join(filepath.Dir(s.o.socket), "supervise.pid")
}

func (s supervisedService) logFile() string { return s.o.supervisorLog }

// superviseArgs is the supervisor's command line on the host.
func (s supervisedService) superviseArgs() []string {
	args := []string{filepath.Join(s.o.binDir, InstallerName), "supervise", "--pid-file", s.pidFile()}
	if s.o.cgroupName != "" {
		args = append(args, "--cgroup", s.o.cgroupName, "--cgroup-parent-pid", strconv.Itoa(s.o.cgroupParentPID))
	}
	return append(append(args, "--"), s.o.serveArgs()...)
}

// running is a shell test for a live supervisor: its PID file names a
// process whose command line is still the supervisor's (PIDs get reused).
func (s supervisedService) running() string {
	return fmt.Sprintf(`pid=$(cat %s 2>/dev/null) && grep -qs supervise /proc/"$pid"/cmdline`, s.pidFile())
}

func (s supervisedService) start(ctx context.Context, rep *Report, restart bool) error {
	if restart {
		if err := s.stop(ctx); err != nil {
			return err
		}
	}
	// The redirections happen in the shell before setsid forks, so the
	// detached supervisor holds none of the runner's pipes open.
	script := fmt.Sprintf("%s || setsid -f %s >>%s 2>&1 </dev/null",
		s.running(), strings.Join(s.superviseArgs(), " "), s.logFile())
	return s.o.runner.Run(ctx, "sh", "-c", script)
}

func (s supervisedService) stop(ctx context.Context) error {
	// The supervisor stops "lazysnap serve" when it gets SIGTERM.
	script := fmt.Sprintf(`if %s; then kill -TERM "$pid"; fi`, s.running())
	return s.o.runner.Run(ctx, "sh", "-c", script)
}

func (s supervisedService) restartContainerd(_ context.Context, rep *Report) error {
	rep.ContainerdRestartNeeded = true
	rep.warn("no systemd on this host: restart containerd yourself to load its changed config")
	return nil
}

func (s supervisedService) remove(ctx context.Context, rep *Report) error {
	return s.stop(ctx)
}
