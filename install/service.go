package install

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
)

// service is how lazysnap is kept running on the host and how containerd is
// restarted: systemd where the host runs it, a supervisor process otherwise.
type service interface {
	// start writes what the service needs and makes sure lazysnap runs,
	// restarting it when restart is set (its binary changed).
	start(ctx context.Context, rep *Report, restart bool) error
	// restartContainerd makes containerd read its changed config.
	restartContainerd(ctx context.Context, rep *Report) error
	// remove stops lazysnap and removes what start wrote.
	remove(ctx context.Context, rep *Report) error
}

// serveArgs is the daemon's command line on the host.
func (o *options) serveArgs() []string {
	return []string{
		filepath.Join(o.binDir, BinaryName), "serve",
		"--address", o.socket,
		"--root", o.rootDir,
		"--config", filepath.Join(o.configDir, "config.toml"),
	}
}

// systemdService runs lazysnap as a systemd unit.
type systemdService struct{ o *options }

func (s systemdService) unitPath() string { return s.o.host(filepath.Join(s.o.unitDir, UnitName)) }

// unit is the lazysnap.service text.
func (s systemdService) unit() []byte {
	return []byte(fmt.Sprintf(`# Installed by lazysnap-install; removed by lazysnap-install uninstall.
[Unit]
Description=lazysnap, a containerd remote snapshotter that mounts image layers lazily
Documentation=https://github.com/lazysnap/lazysnap
After=network-online.target local-fs.target
Wants=network-online.target
# containerd reaches lazysnap as a proxy plugin: start lazysnap first.
Before=%s

[Service]
Type=simple
ExecStart=%s
# "lazysnap serve" starts "lazysnap fused", which holds the FUSE connections
# running containers read from. Stopping only the main process lets a restart
# or an upgrade of lazysnap keep every mounted layer alive.
KillMode=process
Restart=always
RestartSec=1
LimitNOFILE=1048576

[Install]
WantedBy=multi-user.target
`, ContainerdUnit, strings.Join(s.o.serveArgs(), " ")))
}

func (s systemdService) start(ctx context.Context, rep *Report, restart bool) error {
	wrote, err := writeFileIfDifferent(s.unitPath(), s.unit(), 0o644)
	if err != nil {
		return err
	}
	if wrote {
		rep.changed(filepath.Join(s.o.unitDir, UnitName))
		if err := s.o.runner.Run(ctx, "systemctl", "daemon-reload"); err != nil {
			return err
		}
	}
	if !wrote && !restart {
		// Idempotent: enables and starts lazysnap only if it is not already.
		return s.o.runner.Run(ctx, "systemctl", "enable", "--now", UnitName)
	}
	if err := s.o.runner.Run(ctx, "systemctl", "enable", UnitName); err != nil {
		return err
	}
	return s.o.runner.Run(ctx, "systemctl", "restart", UnitName)
}

func (s systemdService) restartContainerd(ctx context.Context, rep *Report) error {
	if err := s.o.runner.Run(ctx, "systemctl", "restart", ContainerdUnit); err != nil {
		return err
	}
	rep.ContainerdRestarted = true
	return nil
}

func (s systemdService) remove(ctx context.Context, rep *Report) error {
	if !fileExists(s.unitPath()) {
		return nil
	}
	if err := s.o.runner.Run(ctx, "systemctl", "disable", "--now", UnitName); err != nil {
		return err
	}
	// KillMode=process left "lazysnap fused" running on purpose; on
	// uninstall it has to go too. It fails harmlessly if nothing is left.
	if err := s.o.runner.Run(ctx, "systemctl", "kill", "--kill-whom=all", UnitName); err != nil {
		rep.warn("stopping lazysnap's remaining processes: %v", err)
	}
	if _, err := removeIfExists(s.unitPath(), false); err != nil {
		return err
	}
	rep.changed(filepath.Join(s.o.unitDir, UnitName))
	return s.o.runner.Run(ctx, "systemctl", "daemon-reload")
}
