package testenv

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
)

// Containerd is a private containerd daemon started for one test.
type Containerd struct {
	// Address is the gRPC socket.
	Address string
	// DebugAddress is the debug socket.
	DebugAddress string
	// Namespace is the namespace Ctr and Client use.
	Namespace string
	// Root and State are the daemon's own directories.
	Root, State string
	// HostsDir holds certs.d/HOST:PORT/hosts.toml for the test registries.
	HostsDir string
	// Runc is the runc binary from the tools dir.
	Runc string
	// Proxy describes the lazysnap proxy snapshotter, if configured.
	Proxy *ProxySnapshotter
	// Client is a containerd Go client connected to Address.
	Client *client.Client

	t         testing.TB
	ctr       string
	configDir string
	runDir    string // short directory for sockets, runc root and FIFOs
	cmd       *exec.Cmd
}

// ProxySnapshotter is the `[proxy_plugins.NAME]` entry of the config.
type ProxySnapshotter struct {
	// Name is the snapshotter name ("lazysnap").
	Name string
	// Socket is the gRPC socket the snapshotter serves on.
	Socket string
	// Root is the snapshotter's root directory (exported to containerd).
	Root string
}

type containerdOptions struct {
	namespace       string
	proxy           *ProxySnapshotter
	registryHosts   []string
	criSandboxImage string
	criSnapshotter  string
	// configFilter, if set, rewrites the rendered config before start.
	configFilter func(c *Containerd, cfg []byte) ([]byte, error)
	// noUnpackConfig leaves the transfer service's unpack_config out.
	noUnpackConfig bool
}

// ContainerdOption configures StartContainerd.
type ContainerdOption func(*containerdOptions)

func defaultContainerdOptions() containerdOptions {
	return containerdOptions{namespace: "default", criSnapshotter: "overlayfs"}
}

// WithNamespace sets the namespace of Ctr and Client. The default is "default".
func WithNamespace(ns string) ContainerdOption {
	return func(o *containerdOptions) { o.namespace = ns }
}

// WithLazysnap adds the `lazysnap` proxy snapshotter, with a socket and a root
// in the daemon's private dirs; start it with StartLazysnap. The default is
// no proxy snapshotter.
func WithLazysnap() ContainerdOption {
	return func(o *containerdOptions) { o.proxy = &ProxySnapshotter{Name: "lazysnap"} }
}

// WithRegistryHost writes a plain-HTTP hosts.toml for host (HOST:PORT).
// The default is no hosts entry; add one per registry the test pulls from.
func WithRegistryHost(host string) ContainerdOption {
	return func(o *containerdOptions) { o.registryHosts = append(o.registryHosts, host) }
}

// WithCRI enables the CRI plugins with sandboxImage (see BuildPauseImage) as
// the pinned sandbox image, unpacking images into snapshotter. The default is
// CRI disabled.
func WithCRI(sandboxImage, snapshotter string) ContainerdOption {
	return func(o *containerdOptions) {
		o.criSandboxImage, o.criSnapshotter = sandboxImage, snapshotter
	}
}

// WithConfigFilter rewrites the rendered config file before containerd
// starts, for example to merge it the way the installer does. The default
// is none.
func WithConfigFilter(f func(c *Containerd, cfg []byte) ([]byte, error)) ContainerdOption {
	return func(o *containerdOptions) { o.configFilter = f }
}

// WithoutUnpackConfig leaves out the transfer service's unpack_config
// entries, so containerd's own default list applies (or whatever a config
// filter writes). The default writes one entry per snapshotter in use.
func WithoutUnpackConfig() ContainerdOption {
	return func(o *containerdOptions) { o.noUnpackConfig = true }
}

// StartContainerd starts a private containerd with its own root, state,
// sockets and config, and stops it (unmounting what it left) when the test
// ends.
func StartContainerd(t testing.TB, opts ...ContainerdOption) *Containerd {
	t.Helper()
	RequireRoot(t)
	o := defaultContainerdOptions()
	for _, opt := range opts {
		opt(&o)
	}
	c := newContainerd(t, o)
	for _, host := range o.registryHosts {
		if err := writeHostsFile(c.HostsDir, host); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := writeContainerdConfig(c, o)
	if err != nil {
		t.Fatal(err)
	}
	c.start(cfg)
	return c
}

// newContainerd lays out the directories. Sockets live in a short directory
// under /run because unix socket paths are limited to 108 bytes. The rest
// is in a short directory too, not t.TempDir, whose name grows with the
// test's: lazysnap keeps fused's sockets in its root, and a benchmark case
// named "BenchmarkStartup/python/lazysnap-zstdchunked/rep1" put them past
// the limit, so fused could not start and the case was a full pull.
func newContainerd(t testing.TB, o containerdOptions) *Containerd {
	t.Helper()
	runDir, err := os.MkdirTemp("/run", "ltd-")
	if err != nil {
		t.Fatalf("creating run dir: %v", err)
	}
	base, err := os.MkdirTemp("", "ltb-")
	if err != nil {
		t.Fatalf("creating base dir: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	c := &Containerd{
		Address:      filepath.Join(runDir, "containerd.sock"),
		DebugAddress: filepath.Join(runDir, "debug.sock"),
		Namespace:    o.namespace,
		Root:         filepath.Join(base, "root"),
		State:        filepath.Join(runDir, "state"),
		HostsDir:     filepath.Join(base, "certs.d"),
		Runc:         Tool(t, "runc"),
		t:            t,
		ctr:          Tool(t, "ctr"),
		configDir:    filepath.Join(base, "config"),
		runDir:       runDir,
	}
	if o.proxy != nil {
		c.Proxy = &ProxySnapshotter{
			Name:   o.proxy.Name,
			Socket: filepath.Join(runDir, o.proxy.Name+".sock"),
			Root:   filepath.Join(base, o.proxy.Name),
		}
	}
	for _, d := range []string{c.Root, c.State, c.HostsDir, c.configDir, c.runcRoot(), c.fifoDir(),
		filepath.Join(c.configDir, "cni-conf"), filepath.Join(c.configDir, "cni-bin")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatalf("creating %s: %v", d, err)
		}
	}
	return c
}

func (c *Containerd) runcRoot() string { return filepath.Join(c.runDir, "runc") }
func (c *Containerd) fifoDir() string  { return filepath.Join(c.runDir, "fifo") }

// start runs the daemon with the tools dir first in PATH (containerd looks
// up containerd-shim-runc-v2 there), waits for it, and registers cleanup.
func (c *Containerd) start(cfg string) {
	t := c.t
	t.Helper()
	c.cmd = exec.Command(Tool(t, "containerd"), "--config", cfg)
	c.cmd.Env = append(os.Environ(), "PATH="+ToolsDir()+":"+os.Getenv("PATH"))
	// Registered before StartProcess so it runs after the daemon is killed
	// (cleanups run last-in first-out).
	t.Cleanup(c.cleanupAfterExit)
	StartProcess(t, "containerd", c.cmd)
	c.waitReady()
	cl, err := client.New(c.Address, client.WithDefaultNamespace(c.Namespace), client.WithTimeout(30*time.Second))
	if err != nil {
		t.Fatalf("connecting to containerd: %v", err)
	}
	c.Client = cl
	t.Cleanup(func() { cl.Close() })
	t.Cleanup(c.stopContainers)
}

// waitReady waits until the daemon answers a version request.
func (c *Containerd) waitReady() {
	c.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, err := c.Ctr("version")
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("containerd did not come up: %v\n%s", err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// CtrCommand returns `ctr --address A --namespace N args...`.
func (c *Containerd) CtrCommand(ctx context.Context, args ...string) *exec.Cmd {
	full := append([]string{"--address", c.Address, "--namespace", c.Namespace}, args...)
	cmd := exec.CommandContext(ctx, c.ctr, full...)
	cmd.Env = append(os.Environ(), "PATH="+ToolsDir()+":"+os.Getenv("PATH"))
	return cmd
}

// Ctr runs ctr with args and returns its standard output; the error carries
// standard error (which also holds containerd's cgroup v1 warnings).
func (c *Containerd) Ctr(args ...string) (string, error) {
	return runCaptured(c.CtrCommand(context.Background(), args...), "ctr", args)
}

// runCaptured runs cmd and returns its standard output; a failure names the
// command and carries its standard error.
func runCaptured(cmd *exec.Cmd, name string, args []string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// MustCtr runs ctr and fails the test if it fails.
func (c *Containerd) MustCtr(t testing.TB, args ...string) string {
	t.Helper()
	out, err := c.Ctr(args...)
	if err != nil {
		t.Fatalf("%v\nstdout: %s", err, out)
	}
	return out
}

// PullArgs returns the arguments of `ctr image pull` through the transfer
// service from the plain-HTTP test registry into snapshotter.
func (c *Containerd) PullArgs(ref, snapshotter string) []string {
	return []string{"image", "pull", "--hosts-dir", c.HostsDir, "--snapshotter", snapshotter, ref}
}

// RunArgs returns the arguments of `ctr run --rm` (see RunFlags); cmd
// follows the container id.
func (c *Containerd) RunArgs(snapshotter, ref, id string, cmd ...string) []string {
	args := append(c.RunFlags(snapshotter, "--rm"), ref, id)
	return append(args, cmd...)
}

// RunFlags returns `run` and its flags for the test's runc, its private runc
// root and FIFO dir, host networking and snapshotter, then extra flags; the
// image ref, container id and command go after them.
func (c *Containerd) RunFlags(snapshotter string, extra ...string) []string {
	args := []string{"run", "--net-host", "--snapshotter", snapshotter,
		"--runc-binary", c.Runc, "--runc-root", c.runcRoot(), "--fifo-dir", c.fifoDir()}
	return append(args, extra...)
}

// BindMount returns the `ctr run` flag bind-mounting host dir src at dst.
func BindMount(src, dst string) []string {
	return []string{"--mount", "type=bind,src=" + src + ",dst=" + dst + ",options=rbind:rw"}
}
