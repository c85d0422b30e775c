package main

import (
	"os"

	"github.com/spf13/cobra"
)

// Environment variables ctr and nerdctl read for the containerd they talk to.
// Honouring them lets lazysnap's client commands run in the same shell as
// those tools without repeating --address and --namespace.
const (
	envContainerdAddress   = "CONTAINERD_ADDRESS"
	envContainerdNamespace = "CONTAINERD_NAMESPACE"
)

// containerdFlags are the flags of a command that talks to containerd.
type containerdFlags struct {
	address   string
	namespace string
}

// defaultContainerdFlags are ctr's defaults.
func defaultContainerdFlags() containerdFlags {
	return containerdFlags{address: "/run/containerd/containerd.sock", namespace: "default"}
}

// containerdFlagDefaults resolves the defaults the way ctr does: a flag given
// on the command line wins (cobra keeps it over the default), then the
// environment, then ctr's built-in default. getenv is os.Getenv outside tests.
func containerdFlagDefaults(getenv func(string) string) containerdFlags {
	d := defaultContainerdFlags()
	if v := getenv(envContainerdAddress); v != "" {
		d.address = v
	}
	if v := getenv(envContainerdNamespace); v != "" {
		d.namespace = v
	}
	return d
}

// addContainerdFlags registers --address and --namespace/-n on cmd with their
// defaults taken from the environment as ctr and nerdctl do.
func addContainerdFlags(cmd *cobra.Command, c *containerdFlags) {
	f, d := cmd.Flags(), containerdFlagDefaults(os.Getenv)
	f.StringVar(&c.address, "address", d.address,
		"containerd's gRPC socket (default from $"+envContainerdAddress+", then /run/containerd/containerd.sock)")
	f.StringVarP(&c.namespace, "namespace", "n", d.namespace,
		"containerd namespace (default from $"+envContainerdNamespace+", then \"default\")")
}
