package install

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
)

// defaultDaemonConfig is lazysnap's config.toml as first installed: every
// setting at its default, for the operator to edit (a reinstall keeps it).
const defaultDaemonConfig = `# lazysnap daemon configuration, read by "lazysnap serve --config".
# Every setting is at its default; see the lazysnap documentation.
`

// installBinaries copies the binaries to the host and reports whether the
// daemon's changed, which calls for restarting it.
func (i *Installer) installBinaries(rep *Report) (bool, error) {
	daemonChanged := false
	for _, b := range []struct{ src, name string }{
		{i.o.daemonBinary, BinaryName},
		{i.o.installerBinary, InstallerName},
	} {
		if b.src == "" {
			continue
		}
		data, err := os.ReadFile(b.src)
		if err != nil {
			return false, fmt.Errorf("reading binary to install: %w", err)
		}
		dst := filepath.Join(i.o.binDir, b.name)
		wrote, err := writeFileIfDifferent(i.o.host(dst), data, 0o755)
		if err != nil {
			return false, err
		}
		if wrote {
			rep.changed(dst)
			daemonChanged = daemonChanged || b.name == BinaryName
		}
	}
	return daemonChanged, nil
}

// writeDaemonConfig writes lazysnap's config if there is none and creates
// its root directory, which containerd is told about as the plugin's root.
func (i *Installer) writeDaemonConfig(rep *Report) error {
	path := filepath.Join(i.o.configDir, "config.toml")
	wrote, err := writeFileIfAbsent(i.o.host(path), []byte(defaultDaemonConfig), 0o644)
	if err != nil {
		return err
	}
	if wrote {
		rep.changed(path)
	}
	if !fileExists(i.o.host(i.o.rootDir)) {
		if err := os.MkdirAll(i.o.host(i.o.rootDir), 0o700); err != nil {
			return fmt.Errorf("creating lazysnap root: %w", err)
		}
		rep.changed(i.o.rootDir)
	}
	return nil
}

// mergeContainerdConfig writes lazysnap's settings into containerd's config
// unless they are there already, first keeping the original as the backup.
// An existing backup is never overwritten: it is the config from before
// the first install, the one uninstall must restore.
func (i *Installer) mergeContainerdConfig(pre preflightResult, rep *Report) error {
	merged, changed := pre.config.merged(i.o.proxySettings())
	if !changed {
		return nil
	}
	data, err := encodeContainerdConfig(merged)
	if err != nil {
		return err
	}
	wrote, err := writeFileIfAbsent(i.o.host(i.o.backupPath()), pre.config.raw, pre.configMode)
	if err != nil {
		return fmt.Errorf("backing up containerd config: %w", err)
	}
	if wrote {
		rep.changed(i.o.backupPath())
	}
	if err := writeFileAtomic(i.o.host(i.o.containerdConfig), data, pre.configMode); err != nil {
		return err
	}
	rep.changed(i.o.containerdConfig)
	rep.ContainerdConfigChanged = true
	return nil
}

// revertContainerdConfig undoes mergeContainerdConfig. If the config is
// still exactly what install made of the backup, the backup is moved back
// (byte-for-byte the original, comments and all). If someone changed it
// since, only lazysnap's settings are reverted, to their values in the
// backup, and the other changes are kept.
func (i *Installer) revertContainerdConfig(pre preflightResult, rep *Report) error {
	cfg := pre.config
	if cfg == nil {
		rep.warn("no containerd config at %s: nothing to revert", i.o.containerdConfig)
		return nil
	}
	original, err := i.readBackup()
	if err != nil {
		return err
	}
	if original != nil {
		ours, _ := original.merged(i.o.proxySettings())
		if reflect.DeepEqual(ours, cfg.tree) {
			return i.restoreBackup(rep)
		}
		rep.warn("containerd config changed since lazysnap was installed: reverted only lazysnap's settings")
	}
	if original == nil && !cfg.hasLazysnap() {
		return nil // never merged, or already reverted
	}
	var originalTree map[string]any
	if original != nil {
		originalTree = original.tree
	}
	tree, changed := cfg.unmerged(i.o.proxySettings(), originalTree)
	if changed {
		data, err := encodeContainerdConfig(tree)
		if err != nil {
			return err
		}
		if err := writeFileAtomic(i.o.host(i.o.containerdConfig), data, pre.configMode); err != nil {
			return err
		}
		rep.changed(i.o.containerdConfig)
		rep.ContainerdConfigChanged = true
	}
	if _, err := removeIfExists(i.o.host(i.o.backupPath()), false); err != nil {
		return err
	}
	return nil
}

// readBackup returns the parsed backup, or nil if there is none.
func (i *Installer) readBackup() (*containerdConfig, error) {
	raw, err := os.ReadFile(i.o.host(i.o.backupPath()))
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading containerd config backup: %w", err)
	}
	cfg, err := parseContainerdConfig(raw)
	if err != nil {
		return nil, fmt.Errorf("containerd config backup %s: %w", i.o.backupPath(), err)
	}
	return cfg, nil
}

func (i *Installer) restoreBackup(rep *Report) error {
	if err := os.Rename(i.o.host(i.o.backupPath()), i.o.host(i.o.containerdConfig)); err != nil {
		return fmt.Errorf("restoring containerd config: %w", err)
	}
	rep.changed(i.o.containerdConfig)
	rep.ContainerdConfigChanged = true
	return nil
}

// removal is a host path Uninstall removes; all removes a directory tree.
type removal struct {
	path string
	all  bool
}

// removeFiles removes the binaries, lazysnap's config and runtime files,
// and with WithPurge its root (the cache).
func (i *Installer) removeFiles(rep *Report) error {
	removals := []removal{
		{filepath.Join(i.o.binDir, BinaryName), false},
		{filepath.Join(i.o.binDir, InstallerName), false},
		{i.o.configDir, true},
		{i.o.socket, false},
		{supervisedService{o: &i.o}.pidFile(), false},
	}
	if i.o.purge {
		removals = append(removals, removal{i.o.rootDir, true})
	}
	for _, r := range removals {
		removed, err := removeIfExists(i.o.host(r.path), r.all)
		if err != nil {
			return err
		}
		if removed {
			rep.changed(r.path)
		}
	}
	return nil
}
