package install

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/contrib/snapshotservice"
	"github.com/containerd/containerd/v2/plugins/snapshots/native"
	"google.golang.org/grpc"

	"github.com/lazysnap/lazysnap/internal/testenv"
)

// TestRealContainerdLoadsMergedConfig starts the pinned containerd 2.4.2
// from each merged config (its own paths moved into a scratch dir) and asks
// containerd, not the file, whether lazysnap is its CRI snapshotter. A
// containerd snapshots service over a native snapshotter stands in for
// "lazysnap serve" on the proxy plugin's socket.
func TestRealContainerdLoadsMergedConfig(t *testing.T) {
	testenv.RequireRoot(t)
	for _, f := range fixtures {
		t.Run(f.name, func(t *testing.T) {
			dir := t.TempDir()
			socket := filepath.Join(dir, "lazysnap.sock")
			lazysnapRoot := filepath.Join(dir, "lazysnap-root")
			h := newScratchHost(t, f.file, true)
			if _, err := h.installerFor(WithSocket(socket), WithRootDir(lazysnapRoot)).Install(context.Background()); err != nil {
				t.Fatal(err)
			}
			serveSnapshots(t, socket, filepath.Join(dir, "snapshots"))
			address := startContainerd(t, dir, h.read(t, "/etc/containerd/config.toml"))

			plugins := ctr(t, address, "plugins", "ls")
			if !hasPlugin(t, plugins, "io.containerd.snapshotter.v1", ProxyPluginName) {
				t.Error("containerd does not list lazysnap as a snapshotter plugin")
			}
			// The transfer service refuses to start on an unpack entry it
			// cannot resolve, so "ok" means lazysnap's entry was accepted.
			if !hasPlugin(t, plugins, "io.containerd.transfer.v1", "local") {
				t.Error("containerd's transfer service did not load with the merged unpack_config")
			}
			ctr(t, address, "snapshots", "--snapshotter", ProxyPluginName, "ls")
			if got := criImageFSMountpoint(t, address); got != lazysnapRoot {
				t.Errorf("CRI image filesystem = %q, want lazysnap's root %q (CRI's snapshotter is not lazysnap)", got, lazysnapRoot)
			}
			if err := CheckHealth(context.Background(), socket); err != nil {
				t.Errorf("health check against a serving snapshotter: %v", err)
			}
			if err := CheckHealth(context.Background(), filepath.Join(dir, "absent.sock")); err == nil {
				t.Error("health check passed against no snapshotter")
			}
		})
	}
}

// serveSnapshots serves containerd's snapshots API on socket.
func serveSnapshots(t *testing.T, socket, root string) {
	t.Helper()
	sn, err := native.NewSnapshotter(root)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(srv, snapshotservice.FromSnapshotter(sn))
	go srv.Serve(l)
	t.Cleanup(func() { srv.Stop(); sn.Close() })
}

// startContainerd starts containerd from merged with its own root, state,
// sockets and no imports, and returns its gRPC address once it answers.
func startContainerd(t *testing.T, dir string, merged []byte) string {
	t.Helper()
	cfg, err := parseContainerdConfig(merged)
	if err != nil {
		t.Fatal(err)
	}
	address := filepath.Join(dir, "containerd.sock")
	isolateContainerd(cfg, dir, address)
	data, err := encodeContainerdConfig(cfg.tree)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "containerd.toml")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	testenv.StartProcess(t, "containerd", exec.Command(testenv.Tool(t, "containerd"), "--config", path))
	for {
		err := exec.Command(testenv.Tool(t, "ctr"), "--address", address, "version").Run()
		if err == nil {
			return address
		}
		if t.Context().Err() != nil {
			t.Fatal("containerd never answered")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// isolateContainerd moves everything containerd owns into dir, so the test
// containerd shares nothing with the host's, and disables plugins that
// need hardware or fixed host paths.
func isolateContainerd(cfg *containerdConfig, dir, address string) {
	t := cfg.tree
	t["root"] = filepath.Join(dir, "root")
	t["state"] = filepath.Join(dir, "state")
	t["imports"] = []any{}
	t["disabled_plugins"] = []any{
		"io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
		"io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
		"io.containerd.snapshotter.v1.blockfile", "io.containerd.snapshotter.v1.erofs",
		"io.containerd.nri.v1.nri",
	}
	setPath(t, []string{"plugins", "io.containerd.internal.v1.opt", "path"}, filepath.Join(dir, "opt"))
	if cfg.version >= 4 {
		setPath(t, []string{"plugins", "io.containerd.server.v1.grpc", "address"}, address)
		setPath(t, []string{"plugins", "io.containerd.server.v1.ttrpc", "address"}, address+".ttrpc")
		setPath(t, []string{"plugins", "io.containerd.server.v1.debug", "address"}, "")
		return
	}
	setPath(t, []string{"grpc", "address"}, address)
	setPath(t, []string{"ttrpc", "address"}, address+".ttrpc")
	setPath(t, []string{"debug", "address"}, "")
}

func ctr(t *testing.T, address string, args ...string) string {
	t.Helper()
	out, err := exec.Command(testenv.Tool(t, "ctr"), append([]string{"--address", address}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ctr %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// hasPlugin finds a loaded plugin in `ctr plugins ls` output.
func hasPlugin(t *testing.T, list, typ, id string) bool {
	t.Helper()
	for _, line := range strings.Split(list, "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 && f[0] == typ && f[1] == id && f[len(f)-1] == "ok" {
			return true
		}
	}
	t.Logf("ctr plugins ls:\n%s", list)
	return false
}

// criImageFSMountpoint asks CRI, as the kubelet does, where the image
// filesystem of its snapshotter is: the root the snapshotter exports.
func criImageFSMountpoint(t *testing.T, address string) string {
	t.Helper()
	endpoint := "unix://" + address
	out, err := exec.Command(testenv.Tool(t, "crictl"), "--runtime-endpoint", endpoint, "--image-endpoint", endpoint,
		"imagefsinfo", "-o", "json").Output()
	if err != nil {
		t.Fatalf("crictl imagefsinfo: %v", err)
	}
	var info struct {
		Status struct {
			ImageFilesystems []struct {
				FsID struct {
					Mountpoint string `json:"mountpoint"`
				} `json:"fsId"`
			} `json:"imageFilesystems"`
		} `json:"status"`
	}
	if err := json.Unmarshal(out, &info); err != nil || len(info.Status.ImageFilesystems) == 0 {
		t.Fatalf("crictl imagefsinfo output %s: %v", out, err)
	}
	return info.Status.ImageFilesystems[0].FsID.Mountpoint
}
