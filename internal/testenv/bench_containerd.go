package testenv

// Additions for the start-up benchmark (package bench), kept in their own
// file so the harness files stay as they are.

// RuncRoot is the private runc root the daemon's containers use; pass it in
// the runc runtime options of a container created with the Go client.
func (c *Containerd) RuncRoot() string { return c.runcRoot() }

// FIFODir is the private directory for the stdio FIFOs of tasks.
func (c *Containerd) FIFODir() string { return c.fifoDir() }

// RunDir is the short directory under /run holding the daemon's sockets,
// state, runc root and FIFOs; it is removed when the test ends.
func (c *Containerd) RunDir() string { return c.runDir }

// WithProxySnapshotter adds a proxy snapshotter named name, like
// WithLazysnap: its socket is Proxy.Socket in the daemon's run dir, where
// the caller links or serves the real socket (containerd dials a proxy
// plugin on first use). The default is no proxy snapshotter.
func WithProxySnapshotter(name string) ContainerdOption {
	return func(o *containerdOptions) { o.proxy = &ProxySnapshotter{Name: name} }
}

// ProcessesMentioning returns the PIDs of the processes having an argument
// that contains one of substrings (a directory, a socket, an address).
func ProcessesMentioning(substrings ...string) []int {
	var pids []int
	for _, p := range processesMentioning(substrings...) {
		pids = append(pids, p.pid)
	}
	return pids
}
