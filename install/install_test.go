package install

import (
	"bytes"
	"context"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/errdefs"
)

// recordingRunner records the host commands instead of running them: the
// tests must not restart the machine's containerd.
type recordingRunner struct {
	mu   sync.Mutex
	cmds []string
}

func (r *recordingRunner) Run(_ context.Context, name string, args ...string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cmds = append(r.cmds, strings.Join(append([]string{name}, args...), " "))
	return nil
}

// take returns the commands recorded since the last take.
func (r *recordingRunner) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	cmds := r.cmds
	r.cmds = nil
	return cmds
}

// scratchHost is a host root holding a containerd config, a FUSE device and
// (optionally) systemd's run directory, plus binaries to install.
type scratchHost struct {
	root      string
	daemon    string
	installer string
	runner    *recordingRunner
}

func newScratchHost(t *testing.T, configFixture string, systemd bool) *scratchHost {
	t.Helper()
	h := &scratchHost{root: t.TempDir(), runner: &recordingRunner{}}
	if configFixture != "" {
		raw, err := os.ReadFile(configFixture)
		if err != nil {
			t.Fatal(err)
		}
		h.write(t, "/etc/containerd/config.toml", raw, 0o600)
	}
	// A symlink to /dev/null stands in for the FUSE device: the preflight
	// wants a character device, and creating one would need root.
	if err := os.MkdirAll(filepath.Join(h.root, "dev"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/dev/null", filepath.Join(h.root, "dev/fuse")); err != nil {
		t.Fatal(err)
	}
	if systemd {
		if err := os.MkdirAll(filepath.Join(h.root, "run/systemd/system"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bins := t.TempDir()
	h.daemon = filepath.Join(bins, "lazysnap")
	h.installer = filepath.Join(bins, "lazysnap-install")
	for _, b := range []string{h.daemon, h.installer} {
		if err := os.WriteFile(b, []byte("#!/bin/sh\n# "+filepath.Base(b)+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

func (h *scratchHost) write(t *testing.T, hostPath string, data []byte, perm fs.FileMode) {
	t.Helper()
	p := filepath.Join(h.root, hostPath)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, perm); err != nil {
		t.Fatal(err)
	}
}

func (h *scratchHost) read(t *testing.T, hostPath string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(h.root, hostPath))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (h *scratchHost) installerFor(opts ...Option) *Installer {
	base := []Option{
		WithHostRoot(h.root),
		WithDaemonBinary(h.daemon),
		WithInstallerBinary(h.installer),
		WithRunner(h.runner),
		WithLogger(slog.New(slog.DiscardHandler)),
	}
	return New(append(base, opts...)...)
}

// snapshot maps every path under the host root to its mode and content, to
// show that a step changed nothing, or undid exactly what another did.
func (h *scratchHost) snapshot(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(h.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(h.root, p)
		entry := info.Mode().String()
		switch {
		case info.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			entry += " " + string(b)
		case info.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			entry += " -> " + target
		}
		out[rel] = entry
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func diffSnapshots(a, b map[string]string) []string {
	var diffs []string
	for k, v := range a {
		if w, ok := b[k]; !ok {
			diffs = append(diffs, "removed "+k)
		} else if v != w {
			diffs = append(diffs, "changed "+k)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			diffs = append(diffs, "added "+k)
		}
	}
	return diffs
}

func TestInstallIdempotentAndUninstallRestores(t *testing.T) {
	for _, f := range fixtures {
		t.Run(f.name, func(t *testing.T) {
			ctx := context.Background()
			h := newScratchHost(t, f.file, true)
			original := h.read(t, "/etc/containerd/config.toml")
			before := h.snapshot(t)

			rep, err := h.installerFor().Install(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if !rep.ContainerdConfigChanged || !rep.ContainerdRestarted {
				t.Errorf("report = %+v, want the config changed and containerd restarted", rep)
			}
			wantCmds := []string{
				"systemctl daemon-reload",
				"systemctl enable lazysnap.service",
				"systemctl restart lazysnap.service",
				"systemctl restart containerd.service",
			}
			if got := h.runner.take(); !reflect.DeepEqual(got, wantCmds) {
				t.Errorf("install ran %q, want %q", got, wantCmds)
			}
			checkInstalled(t, h, f.version, original)
			installed := h.snapshot(t)

			rep, err = h.installerFor().Install(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Changed) > 0 || rep.ContainerdConfigChanged || rep.ContainerdRestarted {
				t.Errorf("second install report = %+v, want nothing changed", rep)
			}
			if got, want := h.runner.take(), []string{"systemctl enable --now lazysnap.service"}; !reflect.DeepEqual(got, want) {
				t.Errorf("second install ran %q, want %q", got, want)
			}
			if d := diffSnapshots(installed, h.snapshot(t)); len(d) > 0 {
				t.Errorf("second install changed the host: %v", d)
			}

			rep, err = h.installerFor(WithPurge(true)).Uninstall(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if got := h.read(t, "/etc/containerd/config.toml"); !bytes.Equal(got, original) {
				t.Error("uninstall did not restore the containerd config byte-for-byte")
			}
			if len(rep.Warnings) > 0 {
				t.Errorf("uninstall warned %q", rep.Warnings)
			}
			wantCmds = []string{
				"systemctl restart containerd.service",
				"systemctl disable --now lazysnap.service",
				"systemctl kill --kill-whom=all lazysnap.service",
				"systemctl daemon-reload",
			}
			if got := h.runner.take(); !reflect.DeepEqual(got, wantCmds) {
				t.Errorf("uninstall ran %q, want %q", got, wantCmds)
			}
			after := h.snapshot(t)
			if d := diffSnapshots(before, after); len(d) > 0 && !onlyEmptyDirsAdded(d, after) {
				t.Errorf("install+uninstall --purge left the host changed: %v", d)
			}

			if rep, err := h.installerFor(WithPurge(true)).Uninstall(ctx); err != nil || len(rep.Changed) > 0 {
				t.Errorf("second uninstall = %+v, %v; want nothing changed", rep, err)
			}
		})
	}
}

// onlyEmptyDirsAdded accepts parent directories install created (like
// /usr/local/bin) and that stay behind, empty, as package managers leave
// them.
func onlyEmptyDirsAdded(diffs []string, snap map[string]string) bool {
	for _, d := range diffs {
		rel, ok := strings.CutPrefix(d, "added ")
		if !ok || !strings.HasPrefix(snap[rel], "d") {
			return false
		}
	}
	return true
}

func checkInstalled(t *testing.T, h *scratchHost, version int64, original []byte) {
	t.Helper()
	for hostPath, src := range map[string]string{
		"/usr/local/bin/lazysnap":         h.daemon,
		"/usr/local/bin/lazysnap-install": h.installer,
	} {
		want, _ := os.ReadFile(src)
		if got := h.read(t, hostPath); !bytes.Equal(got, want) {
			t.Errorf("%s differs from the binary given", hostPath)
		}
		if st, err := os.Stat(filepath.Join(h.root, hostPath)); err != nil || st.Mode().Perm() != 0o755 {
			t.Errorf("%s: mode %v, %v; want 0755", hostPath, st.Mode(), err)
		}
	}
	unit := string(h.read(t, "/etc/systemd/system/lazysnap.service"))
	for _, want := range []string{
		"ExecStart=/usr/local/bin/lazysnap serve --address /run/lazysnap/lazysnap.sock --root /var/lib/lazysnap --config /etc/lazysnap/config.toml\n",
		"KillMode=process\n", "Restart=always\n", "Before=containerd.service\n", "WantedBy=multi-user.target\n",
	} {
		if !strings.Contains(unit, want) {
			t.Errorf("unit lacks %q:\n%s", want, unit)
		}
	}
	if got := h.read(t, "/etc/containerd/config.toml"+BackupSuffix); !bytes.Equal(got, original) {
		t.Error("backup is not the original config")
	}
	if st, _ := os.Stat(filepath.Join(h.root, "/etc/containerd/config.toml")); st.Mode().Perm() != 0o600 {
		t.Errorf("config mode = %v, want the original 0600 kept", st.Mode())
	}
	cfg, err := parseContainerdConfig(h.read(t, "/etc/containerd/config.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := getPath(cfg.tree, append(criImagesPath(version), "snapshotter")); got != ProxyPluginName {
		t.Errorf("CRI snapshotter = %v, want lazysnap", got)
	}
	h.read(t, "/etc/lazysnap/config.toml")
}

func TestUninstallKeepsChangesMadeAfterInstall(t *testing.T) {
	ctx := context.Background()
	h := newScratchHost(t, "testdata/containerd-2.4-default-v4.toml", true)
	if _, err := h.installerFor().Install(ctx); err != nil {
		t.Fatal(err)
	}
	// The operator raises containerd's log level after installing.
	cfg, err := parseContainerdConfig(h.read(t, "/etc/containerd/config.toml"))
	if err != nil {
		t.Fatal(err)
	}
	setPath(cfg.tree, []string{"debug", "level"}, "debug")
	edited, _ := encodeContainerdConfig(cfg.tree)
	h.write(t, "/etc/containerd/config.toml", edited, 0o600)

	rep, err := h.installerFor().Uninstall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Warnings) == 0 {
		t.Error("uninstall did not warn that it only reverted lazysnap's settings")
	}
	got, err := parseContainerdConfig(h.read(t, "/etc/containerd/config.toml"))
	if err != nil {
		t.Fatal(err)
	}
	want := readFixture(t, "testdata/containerd-2.4-default-v4.toml").tree
	setPath(want, []string{"debug", "level"}, "debug")
	if !reflect.DeepEqual(got.tree, want) {
		t.Error("uninstall did not give the original config plus the operator's change")
	}
	if _, err := os.Stat(filepath.Join(h.root, "/etc/containerd/config.toml"+BackupSuffix)); !os.IsNotExist(err) {
		t.Errorf("backup still there after uninstall: %v", err)
	}
	if _, err := os.Stat(filepath.Join(h.root, "/var/lib/lazysnap")); err != nil {
		t.Errorf("uninstall without purge removed lazysnap's root: %v", err)
	}
}

func TestInstallUpgradeRestartsLazysnapNotContainerd(t *testing.T) {
	ctx := context.Background()
	h := newScratchHost(t, "testdata/containerd-2.0-v3.toml", true)
	if _, err := h.installerFor().Install(ctx); err != nil {
		t.Fatal(err)
	}
	h.runner.take()
	if err := os.WriteFile(h.daemon, []byte("#!/bin/sh\n# lazysnap, next release\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	rep, err := h.installerFor().Install(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"systemctl enable lazysnap.service", "systemctl restart lazysnap.service"}
	if got := h.runner.take(); !reflect.DeepEqual(got, want) || rep.ContainerdRestarted {
		t.Errorf("upgrade ran %q (containerd restarted: %v), want %q", got, rep.ContainerdRestarted, want)
	}
}

func TestInstallWithoutSystemdSupervises(t *testing.T) {
	ctx := context.Background()
	h := newScratchHost(t, "testdata/containerd-2.4-default-v4.toml", false)
	rep, err := h.installerFor().Install(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.ContainerdRestartNeeded || rep.ContainerdRestarted {
		t.Errorf("report = %+v, want a containerd restart asked of the operator", rep)
	}
	cmds := h.runner.take()
	if len(cmds) == 0 || !strings.Contains(cmds[len(cmds)-1], "setsid -f /usr/local/bin/lazysnap-install supervise --pid-file /run/lazysnap/supervise.pid --cgroup lazysnap --cgroup-parent-pid 1 -- /usr/local/bin/lazysnap serve") {
		t.Errorf("install ran %q, want the supervisor started", cmds)
	}
	if _, err := os.Stat(filepath.Join(h.root, "/etc/systemd/system/lazysnap.service")); !os.IsNotExist(err) {
		t.Errorf("a systemd unit was written on a host without systemd: %v", err)
	}
}

func TestInstallRefusesAndChangesNothing(t *testing.T) {
	for _, tc := range []struct {
		name    string
		fixture string
		prepare func(t *testing.T, h *scratchHost)
		opts    []Option
		isErr   func(error) bool
	}{
		{name: "no containerd config", isErr: errdefs.IsNotFound},
		{
			name: "unparseable config", fixture: "testdata/containerd-2.4-default-v4.toml",
			prepare: func(t *testing.T, h *scratchHost) {
				h.write(t, "/etc/containerd/config.toml", []byte("version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"\n"), 0o644)
			},
			isErr: errdefs.IsInvalidArgument,
		},
		{
			name: "version 1 config", fixture: "testdata/containerd-2.4-default-v4.toml",
			prepare: func(t *testing.T, h *scratchHost) {
				h.write(t, "/etc/containerd/config.toml", []byte("root = \"/var/lib/containerd\"\n"), 0o644)
			},
			isErr: errdefs.IsFailedPrecondition,
		},
		{
			name: "no /dev/fuse", fixture: "testdata/containerd-2.4-default-v4.toml",
			prepare: func(t *testing.T, h *scratchHost) {
				if err := os.Remove(filepath.Join(h.root, "dev/fuse")); err != nil {
					t.Fatal(err)
				}
			},
			isErr: errdefs.IsFailedPrecondition,
		},
		{
			name: "/dev/fuse not a device", fixture: "testdata/containerd-2.4-default-v4.toml",
			prepare: func(t *testing.T, h *scratchHost) {
				os.Remove(filepath.Join(h.root, "dev/fuse"))
				h.write(t, "/dev/fuse", nil, 0o644)
			},
			isErr: errdefs.IsFailedPrecondition,
		},
		{
			name: "no systemd and no supervisor", fixture: "testdata/containerd-2.4-default-v4.toml",
			prepare: func(t *testing.T, h *scratchHost) {
				os.RemoveAll(filepath.Join(h.root, "run/systemd"))
			},
			opts:  []Option{WithInstallerBinary("")},
			isErr: errdefs.IsFailedPrecondition,
		},
		{
			name: "no binary", fixture: "testdata/containerd-2.4-default-v4.toml",
			opts:  []Option{WithDaemonBinary("")},
			isErr: errdefs.IsInvalidArgument,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newScratchHost(t, tc.fixture, true)
			if tc.prepare != nil {
				tc.prepare(t, h)
			}
			before := h.snapshot(t)
			_, err := h.installerFor(tc.opts...).Install(context.Background())
			if err == nil || !tc.isErr(err) {
				t.Fatalf("Install err = %v, want the right errdefs category", err)
			}
			if d := diffSnapshots(before, h.snapshot(t)); len(d) > 0 {
				t.Errorf("refused install changed the host: %v", d)
			}
			if cmds := h.runner.take(); len(cmds) > 0 {
				t.Errorf("refused install ran %q", cmds)
			}
		})
	}
}
