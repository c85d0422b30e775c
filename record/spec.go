package record

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// specNamespace is the containerd namespace containerd's spec helpers need.
const specNamespace = "lazysnap-record"

// workloadSpec builds the OCI runtime spec of the workload: containerd's
// defaults (mounts of /proc, /dev, /sys, capabilities, masked paths, new
// pid/ipc/uts/mount/network namespaces) with the image's process settings.
func workloadSpec(ctx context.Context, id string, cfg v1.Config, sb *sandbox, o *options) (*specs.Spec, error) {
	args := o.command
	if len(args) == 0 {
		args = append(append([]string(nil), cfg.Entrypoint...), cfg.Cmd...)
	}
	if len(args) == 0 {
		return nil, fmt.Errorf("the image has no entrypoint or command; give one: %w", errdefs.ErrInvalidArgument)
	}
	cwd := cfg.WorkingDir
	if cwd == "" {
		cwd = "/"
	}
	opts := []oci.SpecOpts{
		oci.WithProcessArgs(args...),
		oci.WithEnv(cfg.Env),
		oci.WithEnv(o.env),
		oci.WithProcessCwd(cwd),
		// The user is looked up in the extracted image, not through the
		// overlay, so that the lookup is not recorded.
		oci.WithRootFSPath(sb.lower),
	}
	if cfg.User != "" {
		opts = append(opts, oci.WithUser(cfg.User), oci.WithAdditionalGIDs(cfg.User))
	}
	// A top-level cgroup rather than one under a shared parent: runc
	// removes the cgroup it made, never its parents.
	opts = append(opts, oci.WithRootFSPath(sb.merged), oci.WithCgroup("/"+id))
	if o.network {
		opts = append(opts, oci.WithHostNamespace(specs.NetworkNamespace), withHostResolvConf)
	}
	ctx = namespaces.WithNamespace(ctx, specNamespace)
	s, err := oci.GenerateSpec(ctx, nil, &containers.Container{ID: id}, opts...)
	if err != nil {
		return nil, fmt.Errorf("building runtime spec: %w", err)
	}
	return s, nil
}

// withHostResolvConf gives a workload on the host network the host's DNS
// settings, as a container engine would.
func withHostResolvConf(ctx context.Context, c oci.Client, ctr *containers.Container, s *oci.Spec) error {
	const resolv = "/etc/resolv.conf"
	if _, err := os.Stat(resolv); err != nil {
		return nil
	}
	return oci.WithMounts([]specs.Mount{{
		Destination: resolv, Source: resolv, Type: "bind", Options: []string{"rbind", "ro", "nosuid", "nodev", "noexec"},
	}})(ctx, c, ctr, s)
}

// writeBundle writes an OCI bundle (config.json) in dir.
func writeBundle(dir string, s *specs.Spec) error {
	b, err := json.MarshalIndent(s, "", "\t")
	if err != nil {
		return fmt.Errorf("encoding runtime spec: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o600); err != nil {
		return fmt.Errorf("writing runtime spec: %w", err)
	}
	return nil
}
