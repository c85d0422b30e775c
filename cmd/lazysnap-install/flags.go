package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/pflag"

	"github.com/lazysnap/lazysnap/install"
)

// hostFlags are the flags every command acting on a host shares.
type hostFlags struct {
	hostRoot         string
	containerdConfig string
	socket           string
	rootDir          string
	nsenter          bool
	checkFused       bool
	healthGrace      time.Duration
}

func (f *hostFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.hostRoot, "host-root", "/", `where the host's file system is ("/host" in the DaemonSet pod)`)
	fs.StringVar(&f.containerdConfig, "containerd-config", "/etc/containerd/config.toml", "containerd's config file on the host")
	fs.StringVar(&f.socket, "socket", "/run/lazysnap/lazysnap.sock", "lazysnap's socket on the host")
	fs.StringVar(&f.rootDir, "root", "/var/lib/lazysnap", "lazysnap's root (state and cache) on the host")
	fs.BoolVar(&f.nsenter, "nsenter", false, "run host commands (systemctl) in PID 1's namespaces, as a pod with hostPID must")
	fs.BoolVar(&f.checkFused, "check-fused", true, "health checks also ask lazysnap fused on ROOT/fused.sock (turn off with fuse_manager = false)")
	fs.DurationVar(&f.healthGrace, "health-grace", install.DefaultHealthGrace, "how long serve or fused may stop answering before the health check fails (they restart each other)")
}

func (f *hostFlags) options() []install.Option {
	runner := install.ExecRunner{}
	if f.nsenter {
		runner.Prefix = install.NsenterPrefix()
	}
	return []install.Option{
		install.WithHostRoot(f.hostRoot),
		install.WithContainerdConfig(f.containerdConfig),
		install.WithSocket(f.socket),
		install.WithRootDir(f.rootDir),
		install.WithRunner(runner),
		install.WithLogger(slog.Default()),
	}
}

// socketPath is lazysnap's socket as seen from this process.
func (f *hostFlags) socketPath() string { return filepath.Join(f.hostRoot, f.socket) }

// health returns the checker of serve and, unless turned off, fused, whose
// socket is in lazysnap's root.
func (f *hostFlags) health(grace time.Duration) *install.Health {
	fusedSocket := ""
	if f.checkFused {
		fusedSocket = filepath.Join(f.hostRoot, f.rootDir, "fused.sock")
	}
	return install.NewHealth(f.socketPath(), fusedSocket, install.WithHealthGrace(grace))
}

// installFlags are install's own flags.
type installFlags struct {
	hostFlags
	binary          string
	installerBinary string
}

func (f *installFlags) register(fs *pflag.FlagSet) {
	f.hostFlags.register(fs)
	fs.StringVar(&f.binary, "binary", "", "the lazysnap binary to install (required)")
	fs.StringVar(&f.installerBinary, "installer-binary", "", "the lazysnap-install binary to install (default: this one)")
}

func (f *installFlags) options() ([]install.Option, error) {
	self := f.installerBinary
	if self == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("finding this binary: %w", err)
		}
		self = exe
	}
	return append(f.hostFlags.options(), install.WithDaemonBinary(f.binary), install.WithInstallerBinary(self)), nil
}

// printReport tells the operator what changed.
func printReport(verb string, rep install.Report) {
	if len(rep.Changed) == 0 {
		fmt.Printf("%s: nothing to change\n", verb)
	}
	for _, p := range rep.Changed {
		fmt.Printf("%s: changed %s\n", verb, p)
	}
	if rep.ContainerdRestarted {
		fmt.Printf("%s: restarted containerd\n", verb)
	}
	for _, w := range rep.Warnings {
		fmt.Printf("%s: warning: %s\n", verb, w)
	}
}
