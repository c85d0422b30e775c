package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// disabledPlugins are the containerd plugins a test daemon never uses: the
// snapshotters that need special filesystems, and services that would reach
// for host-wide paths (NRI, tracing).
func disabledPlugins() []string {
	return []string{
		"io.containerd.snapshotter.v1.btrfs",
		"io.containerd.snapshotter.v1.zfs",
		"io.containerd.snapshotter.v1.devmapper",
		"io.containerd.snapshotter.v1.erofs",
		"io.containerd.snapshotter.v1.blockfile",
		"io.containerd.differ.v1.erofs",
		"io.containerd.nri.v1.nri",
		"io.containerd.tracing.processor.v1.otlp",
		"io.containerd.internal.v1.tracing",
	}
}

// criPlugins are disabled unless a test asks for CRI.
func criPlugins() []string {
	return []string{
		"io.containerd.grpc.v1.cri",
		"io.containerd.cri.v1.runtime",
		"io.containerd.cri.v1.images",
		"io.containerd.podsandbox.controller.v1.podsandbox",
	}
}

// writeContainerdConfig renders the config v3 TOML for c and returns its path.
func writeContainerdConfig(c *Containerd, o containerdOptions) (string, error) {
	var b strings.Builder
	disabled := disabledPlugins()
	if o.criSandboxImage == "" {
		disabled = append(disabled, criPlugins()...)
	}
	fmt.Fprintf(&b, "version = 3\nroot = %q\nstate = %q\ndisabled_plugins = %s\n\n",
		c.Root, c.State, tomlList(disabled))
	fmt.Fprintf(&b, "[grpc]\n  address = %q\n[ttrpc]\n  address = %q\n[debug]\n  address = %q\n  level = \"info\"\n\n",
		c.Address, c.Address+".ttrpc", c.DebugAddress)
	fmt.Fprintf(&b, "[plugins.'io.containerd.internal.v1.opt']\n  path = %q\n\n", filepath.Join(c.Root, "opt"))
	writeTransferConfig(&b, c, o)
	if o.criSandboxImage != "" {
		writeCRIConfig(&b, c, o)
	}
	if c.Proxy != nil {
		writeProxyConfig(&b, c.Proxy)
	}
	data := []byte(b.String())
	if o.configFilter != nil {
		var err error
		if data, err = o.configFilter(c, data); err != nil {
			return "", fmt.Errorf("filtering containerd config: %w", err)
		}
	}
	path := filepath.Join(c.configDir, "config.toml")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return "", fmt.Errorf("writing containerd config: %w", err)
	}
	return path, nil
}

// writeTransferConfig points the transfer service (used by `ctr image pull`
// without --local) at the hosts dir, and lets it unpack into every
// snapshotter a test uses: it only unpacks into the ones listed.
func writeTransferConfig(b *strings.Builder, c *Containerd, o containerdOptions) {
	fmt.Fprintf(b, "[plugins.'io.containerd.transfer.v1.local']\n  config_path = %q\n", c.HostsDir)
	if o.noUnpackConfig {
		b.WriteString("\n")
		return
	}
	snapshotters := []string{"overlayfs"}
	if c.Proxy != nil {
		snapshotters = append(snapshotters, c.Proxy.Name)
	}
	for _, sn := range snapshotters {
		fmt.Fprintf(b, "[[plugins.'io.containerd.transfer.v1.local'.unpack_config]]\n"+
			"  platform = %q\n  snapshotter = %q\n  differ = \"walking\"\n",
			"linux/"+runtime.GOARCH, sn)
	}
	b.WriteString("\n")
}

// writeCRIConfig enables CRI with the locally built sandbox image and runc
// from the tools dir. Snapshot annotations stay on so a remote snapshotter
// gets the layer labels (this makes CRI use the client-side pull). The
// OOM score is restricted because test hosts may lack CAP_SYS_RESOURCE,
// without which runc cannot lower a sandbox's oom_score_adj.
func writeCRIConfig(b *strings.Builder, c *Containerd, o containerdOptions) {
	fmt.Fprintf(b, "[plugins.'io.containerd.cri.v1.images']\n  snapshotter = %q\n  disable_snapshot_annotations = false\n",
		o.criSnapshotter)
	fmt.Fprintf(b, "[plugins.'io.containerd.cri.v1.images'.pinned_images]\n  sandbox = %q\n", o.criSandboxImage)
	fmt.Fprintf(b, "[plugins.'io.containerd.cri.v1.images'.registry]\n  config_path = %q\n", c.HostsDir)
	fmt.Fprintf(b, "[plugins.'io.containerd.cri.v1.runtime']\n  enable_cdi = false\n  restrict_oom_score_adj = true\n")
	fmt.Fprintf(b, "[plugins.'io.containerd.cri.v1.runtime'.cni]\n  bin_dirs = [%q]\n  conf_dir = %q\n",
		filepath.Join(c.configDir, "cni-bin"), filepath.Join(c.configDir, "cni-conf"))
	fmt.Fprintf(b, "[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n")
	fmt.Fprintf(b, "[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]\n  BinaryName = %q\n  Root = %q\n\n", c.Runc, c.runcRoot())
}

func writeProxyConfig(b *strings.Builder, p *ProxySnapshotter) {
	fmt.Fprintf(b, "[proxy_plugins.%s]\n  type = \"snapshot\"\n  address = %q\n", p.Name, p.Socket)
	fmt.Fprintf(b, "[proxy_plugins.%s.exports]\n  root = %q\n  enable_remote_snapshot_annotations = \"true\"\n\n",
		p.Name, p.Root)
}

// writeHostsFile makes containerd talk plain HTTP to host (HOST:PORT).
// skip_verify is deliberately absent: it makes the client try HTTPS first.
func writeHostsFile(hostsDir, host string) error {
	dir := filepath.Join(hostsDir, host)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating hosts dir for %s: %w", host, err)
	}
	toml := fmt.Sprintf("server = \"http://%s\"\n\n[host.\"http://%s\"]\n  capabilities = [\"pull\", \"resolve\", \"push\"]\n",
		host, host)
	if err := os.WriteFile(filepath.Join(dir, "hosts.toml"), []byte(toml), 0o644); err != nil {
		return fmt.Errorf("writing hosts.toml for %s: %w", host, err)
	}
	return nil
}

func tomlList(items []string) string {
	quoted := make([]string, len(items))
	for i, s := range items {
		quoted[i] = fmt.Sprintf("%q", s)
	}
	return "[" + strings.Join(quoted, ", ") + "]"
}
