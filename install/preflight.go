package install

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/containerd/errdefs"
)

// preflightResult is what the checks found out about the host.
type preflightResult struct {
	// config is containerd's config; nil only when uninstalling from a
	// host whose config is gone.
	config *containerdConfig
	// configMode is the config file's permission bits, kept on rewrite.
	configMode fs.FileMode
	service    service
}

// preflight checks everything Install (or Uninstall) needs before either
// changes anything, so that a host it cannot handle is refused untouched.
func (i *Installer) preflight(installing bool) (preflightResult, error) {
	var pre preflightResult
	cfg, mode, err := i.readContainerdConfig()
	switch {
	case errors.Is(err, errdefs.ErrNotFound) && !installing:
		// Nothing to revert; the rest of lazysnap can still be removed.
	case err != nil:
		return pre, err
	}
	pre.config, pre.configMode = cfg, mode
	if installing {
		if err := i.checkInstallInputs(); err != nil {
			return pre, err
		}
	}
	pre.service, err = i.chooseService(installing)
	return pre, err
}

func (i *Installer) readContainerdConfig() (*containerdConfig, fs.FileMode, error) {
	path := i.o.host(i.o.containerdConfig)
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, fmt.Errorf("no containerd config at %s (is containerd installed? see --containerd-config): %w",
			i.o.containerdConfig, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("checking containerd config: %w", err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, 0, fmt.Errorf("reading containerd config: %w", err)
	}
	cfg, err := parseContainerdConfig(raw)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", i.o.containerdConfig, err)
	}
	return cfg, st.Mode().Perm(), nil
}

// checkInstallInputs checks the binaries to install and the FUSE device
// lazysnap cannot work without.
func (i *Installer) checkInstallInputs() error {
	if i.o.daemonBinary == "" {
		return fmt.Errorf("no lazysnap binary given to install: %w", errdefs.ErrInvalidArgument)
	}
	for _, bin := range []string{i.o.daemonBinary, i.o.installerBinary} {
		if bin == "" {
			continue
		}
		if st, err := os.Stat(bin); err != nil || !st.Mode().IsRegular() {
			return fmt.Errorf("binary to install %s is not a regular file: %w", bin, errdefs.ErrInvalidArgument)
		}
	}
	st, err := os.Stat(i.o.host(i.o.fuseDevice))
	if err != nil || st.Mode()&fs.ModeCharDevice == 0 {
		return fmt.Errorf("no FUSE device at %s (load the fuse module, or mount /dev/fuse into the pod): %w",
			i.o.fuseDevice, errdefs.ErrFailedPrecondition)
	}
	return nil
}

// chooseService picks systemd when the host runs it (the directory systemd
// creates at boot, as sd_booted(3) checks), the supervisor otherwise.
func (i *Installer) chooseService(installing bool) (service, error) {
	if st, err := os.Stat(i.o.host("/run/systemd/system")); err == nil && st.IsDir() {
		return systemdService{o: &i.o}, nil
	}
	if installing && i.o.installerBinary == "" {
		return nil, fmt.Errorf("host runs no systemd and no lazysnap-install binary was given to supervise lazysnap: %w",
			errdefs.ErrFailedPrecondition)
	}
	return supervisedService{o: &i.o}, nil
}
