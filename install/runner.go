package install

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// Runner runs a command on the host and waits for it. The installer only
// reaches the host's init system through a Runner, so tests can record the
// commands instead of restarting the machine's containerd.
type Runner interface {
	Run(ctx context.Context, name string, args ...string) error
}

// NsenterPrefix returns the command prefix that enters every namespace of the
// host's PID 1. A DaemonSet pod with hostPID uses it to run systemctl as if
// it were on the host.
func NsenterPrefix() []string {
	return []string{"nsenter", "-t", "1", "-m", "-u", "-i", "-n", "-p", "--"}
}

// ExecRunner runs commands with os/exec, each prefixed with Prefix (for
// example NsenterPrefix()); an empty Prefix runs them directly.
type ExecRunner struct {
	Prefix []string
}

// Run runs name with args and returns its output in the error if it fails.
func (r ExecRunner) Run(ctx context.Context, name string, args ...string) error {
	argv := append(append(append([]string{}, r.Prefix...), name), args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("running %s: %w: %s", strings.Join(argv, " "), err, bytes.TrimSpace(out.Bytes()))
	}
	return nil
}
