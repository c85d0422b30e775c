package install

import (
	"log/slog"

	"github.com/containerd/platforms"
)

// Host paths. They are paths on the host, joined to the host root only when
// the installer touches files, so the same values go into the systemd unit
// and the containerd config.
const (
	// BinaryName is the name of the daemon binary on the host.
	BinaryName = "lazysnap"
	// InstallerName is the name of the installer binary on the host; the
	// supervised mode (hosts without systemd) runs it as the supervisor.
	InstallerName = "lazysnap-install"
	// UnitName is the systemd unit lazysnap runs as.
	UnitName = "lazysnap.service"
	// ContainerdUnit is the systemd unit restarted when its config changes.
	ContainerdUnit = "containerd.service"
	// BackupSuffix is appended to the containerd config's path for the copy
	// of the original config kept by the first install that changed it.
	BackupSuffix = ".lazysnap-backup"
)

// Option configures an Installer.
type Option func(*options)

type options struct {
	hostRoot         string
	containerdConfig string
	binDir           string
	configDir        string
	rootDir          string
	socket           string
	platform         string
	unitDir          string
	fuseDevice       string
	daemonBinary     string
	installerBinary  string
	runner           Runner
	purge            bool
	logger           *slog.Logger
	cgroupName       string
	cgroupParentPID  int
	supervisorLog    string
}

// defaultOptions holds every default in one place; each With* option
// documents the default it overrides.
func defaultOptions() options {
	return options{
		hostRoot:         "/",
		containerdConfig: "/etc/containerd/config.toml",
		binDir:           "/usr/local/bin",
		configDir:        "/etc/lazysnap",
		rootDir:          "/var/lib/lazysnap",
		socket:           "/run/lazysnap/lazysnap.sock",
		platform:         platforms.Format(platforms.DefaultSpec()),
		unitDir:          "/etc/systemd/system",
		fuseDevice:       "/dev/fuse",
		runner:           ExecRunner{},
		logger:           slog.Default(),
		cgroupName:       DefaultCgroupName,
		cgroupParentPID:  DefaultCgroupParentPID,
		supervisorLog:    "/var/log/lazysnap.log",
	}
}

// WithHostRoot sets the directory where the host's root file system is
// visible: "/host" in the DaemonSet pod, a scratch directory in tests. Every
// other path is a host path below it. The default is "/".
func WithHostRoot(dir string) Option { return func(o *options) { o.hostRoot = dir } }

// WithContainerdConfig sets the host path of containerd's config file.
// The default is "/etc/containerd/config.toml".
func WithContainerdConfig(path string) Option {
	return func(o *options) { o.containerdConfig = path }
}

// WithBinDir sets the host directory the binaries are installed to.
// The default is "/usr/local/bin".
func WithBinDir(dir string) Option { return func(o *options) { o.binDir = dir } }

// WithConfigDir sets the host directory of lazysnap's own config.toml.
// The default is "/etc/lazysnap".
func WithConfigDir(dir string) Option { return func(o *options) { o.configDir = dir } }

// WithRootDir sets lazysnap's state and cache directory on the host, also
// exported to containerd as the proxy plugin's root. Uninstall keeps it
// unless WithPurge is given. The default is "/var/lib/lazysnap".
func WithRootDir(dir string) Option { return func(o *options) { o.rootDir = dir } }

// WithSocket sets the host path of lazysnap's gRPC socket, which containerd
// dials as the proxy plugin's address. The default is
// "/run/lazysnap/lazysnap.sock".
func WithSocket(path string) Option { return func(o *options) { o.socket = path } }

// WithPlatform sets the platform of the transfer service's unpack entries
// written into containerd's config (lazysnap's, and overlayfs's when the
// config had none). The default is the installer's own platform, as
// containerd computes its default ("linux/amd64" on x86-64); the DaemonSet
// runs on the node, so that is the node's.
func WithPlatform(p string) Option { return func(o *options) { o.platform = p } }

// WithUnitDir sets the host directory of the systemd unit.
// The default is "/etc/systemd/system".
func WithUnitDir(dir string) Option { return func(o *options) { o.unitDir = dir } }

// WithFUSEDevice sets the host path of the FUSE device that must exist.
// The default is "/dev/fuse".
func WithFUSEDevice(path string) Option { return func(o *options) { o.fuseDevice = path } }

// WithDaemonBinary sets the path, in the installer's own file system, of the
// lazysnap binary to copy to the host. Install requires it.
// The default is "" (none).
func WithDaemonBinary(path string) Option { return func(o *options) { o.daemonBinary = path } }

// WithInstallerBinary sets the path of the lazysnap-install binary to copy to
// the host, where the supervised mode runs it. Without it a host lacking
// systemd is refused. The default is "" (none).
func WithInstallerBinary(path string) Option {
	return func(o *options) { o.installerBinary = path }
}

// WithRunner sets how commands (systemctl, the supervisor) run on the host:
// tests record them, the DaemonSet enters the host's namespaces with
// nsenter. The default is ExecRunner{}, running them directly.
func WithRunner(r Runner) Option { return func(o *options) { o.runner = r } }

// WithPurge makes Uninstall also remove lazysnap's root directory (its
// cache and state). The default is false: the cache survives a reinstall.
func WithPurge(purge bool) Option { return func(o *options) { o.purge = purge } }

// WithLogger sets the logger. The default is slog.Default().
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithCgroup sets the cgroup the supervisor (hosts without systemd) moves
// lazysnap into, created below the cgroup of the process parentPID in every
// hierarchy; an empty name leaves lazysnap in the cgroup it was started in
// (the DaemonSet pod's). The default is DefaultCgroupName below the host's
// init (DefaultCgroupParentPID); tests nest it below their own process.
func WithCgroup(name string, parentPID int) Option {
	return func(o *options) { o.cgroupName, o.cgroupParentPID = name, parentPID }
}

// WithSupervisorLog sets the host path of the supervisor's log (lazysnap's
// output on hosts without systemd). The default is "/var/log/lazysnap.log".
func WithSupervisorLog(path string) Option { return func(o *options) { o.supervisorLog = path } }
