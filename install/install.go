// Package install installs lazysnap on a host and wires it into containerd:
// it copies the binaries, writes a systemd unit (or starts a supervisor where
// there is no systemd), and merges lazysnap's proxy plugin and CRI settings
// into containerd's config, keeping every other setting and a backup of the
// original. Uninstall reverts all of it. It works on a host root directory,
// "/" on a node, "/host" in the DaemonSet pod, a scratch directory in tests.
package install

import (
	"context"
	"fmt"
	"path/filepath"
)

// Installer installs and uninstalls lazysnap on one host.
type Installer struct {
	o options
}

// New returns an Installer configured by opts.
func New(opts ...Option) *Installer {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	return &Installer{o: o}
}

// Report says what Install or Uninstall did.
type Report struct {
	// Changed lists the host paths written or removed, in order.
	Changed []string
	// ContainerdConfigChanged is set when containerd's config was written.
	ContainerdConfigChanged bool
	// ContainerdRestarted is set when containerd was restarted.
	ContainerdRestarted bool
	// ContainerdRestartNeeded is set when the config changed but the
	// installer had no way to restart containerd (no systemd).
	ContainerdRestartNeeded bool
	// Warnings are things the operator should know; none is fatal.
	Warnings []string
}

func (r *Report) changed(hostPath string) { r.Changed = append(r.Changed, hostPath) }

func (r *Report) warn(format string, args ...any) {
	r.Warnings = append(r.Warnings, fmt.Sprintf(format, args...))
}

// host returns where a host path is in the installer's file system.
func (o *options) host(path string) string { return filepath.Join(o.hostRoot, path) }

func (o *options) backupPath() string { return o.containerdConfig + BackupSuffix }

func (o *options) proxySettings() proxySettings {
	return proxySettings{socket: o.socket, rootDir: o.rootDir, platform: o.platform}
}

// Install installs lazysnap and configures containerd to use it. Every check
// runs before the first change, so a refused host is left as it was. A
// second Install changes nothing and does not restart containerd.
func (i *Installer) Install(ctx context.Context) (Report, error) {
	var rep Report
	pre, err := i.preflight(true)
	if err != nil {
		return rep, err
	}
	binChanged, err := i.installBinaries(&rep)
	if err != nil {
		return rep, err
	}
	if err := i.writeDaemonConfig(&rep); err != nil {
		return rep, err
	}
	if err := i.mergeContainerdConfig(pre, &rep); err != nil {
		return rep, err
	}
	// lazysnap starts before containerd restarts so that containerd finds
	// the proxy plugin's socket at once.
	if err := pre.service.start(ctx, &rep, binChanged); err != nil {
		return rep, fmt.Errorf("starting lazysnap: %w", err)
	}
	if rep.ContainerdConfigChanged {
		if err := pre.service.restartContainerd(ctx, &rep); err != nil {
			return rep, fmt.Errorf("restarting containerd: %w", err)
		}
	}
	i.o.logger.Info("lazysnap installed", "changed", rep.Changed, "containerdRestarted", rep.ContainerdRestarted)
	return rep, nil
}

// Uninstall reverts Install: containerd's config first (restored
// byte-for-byte from the backup when nobody changed it since), then the
// service, binaries and lazysnap's config. lazysnap's root (its cache) is
// kept unless WithPurge was given. Running it again changes nothing.
func (i *Installer) Uninstall(ctx context.Context) (Report, error) {
	var rep Report
	pre, err := i.preflight(false)
	if err != nil {
		return rep, err
	}
	if err := i.revertContainerdConfig(pre, &rep); err != nil {
		return rep, err
	}
	// containerd stops using lazysnap before lazysnap goes away.
	if rep.ContainerdConfigChanged {
		if err := pre.service.restartContainerd(ctx, &rep); err != nil {
			return rep, fmt.Errorf("restarting containerd: %w", err)
		}
	}
	if err := pre.service.remove(ctx, &rep); err != nil {
		return rep, fmt.Errorf("stopping lazysnap: %w", err)
	}
	if err := i.removeFiles(&rep); err != nil {
		return rep, err
	}
	i.o.logger.Info("lazysnap uninstalled", "changed", rep.Changed, "containerdRestarted", rep.ContainerdRestarted)
	return rep, nil
}
