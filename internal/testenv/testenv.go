// Package testenv starts the real parts tests need (the distribution
// registry, containerd, runc, lazysnap) with private directories and ports,
// and stops them when the test ends. The binaries come from
// script/install-deps.sh, in $LAZYSNAP_TOOLS.
package testenv

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// DefaultToolsDir is where script/install-deps.sh puts binaries unless
// $LAZYSNAP_TOOLS says otherwise.
const DefaultToolsDir = "/usr/local/lib/lazysnap-tools/bin"

// ToolsDir returns the directory holding the pinned test tools.
func ToolsDir() string {
	if d := os.Getenv("LAZYSNAP_TOOLS"); d != "" {
		return d
	}
	return DefaultToolsDir
}

// Tool returns the path of a pinned tool, failing the test if it is missing:
// `make test` installs every tool first, so a missing one is a set-up bug.
func Tool(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(ToolsDir(), name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("tool %s not installed (run script/install-deps.sh): %v", name, err)
	}
	return p
}

// RequireRoot skips the test unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
}

// RequireFUSE skips the test unless /dev/fuse is usable and we are root.
func RequireFUSE(t testing.TB) {
	t.Helper()
	RequireRoot(t)
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse")
	}
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// WaitTCP waits until addr accepts connections.
func WaitTCP(t testing.TB, addr string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not come up within %s: %v", addr, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// StartProcess starts cmd in its own process group, logs its output to a file
// in the test's temp dir, and kills the group when the test ends.
func StartProcess(t testing.TB, name string, cmd *exec.Cmd) {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = f, f
	setProcessGroup(cmd)
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("starting %s: %v", name, err)
	}
	t.Cleanup(func() {
		killProcessGroup(cmd)
		_ = cmd.Wait()
		f.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logPath); err == nil {
				t.Logf("%s output:\n%s", name, tail(b, 4000))
			}
		}
	})
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// Registry is a running distribution registry serving plain HTTP.
type Registry struct {
	// Host is "127.0.0.1:PORT", usable in image references.
	Host string
	// Dir holds the registry's storage.
	Dir string
}

// Ref returns a reference to repo:tag in this registry.
func (r *Registry) Ref(repoTag string) string { return r.Host + "/" + repoTag }

// RegistryOption configures StartRegistry.
type RegistryOption func(*registryOptions)

type registryOptions struct {
	dataDir  string // "" = a fresh temp dir
	htpasswd string // "" = no authentication
	proxyURL string // "" = not a pull-through cache
}

// WithRegistryProxy makes the registry a pull-through cache of remoteURL
// ("http://HOST:PORT"), distribution's proxy mode: blobs it lacks are
// fetched from there and kept. The default is a plain registry.
func WithRegistryProxy(remoteURL string) RegistryOption {
	return func(o *registryOptions) { o.proxyURL = remoteURL }
}

// WithRegistryData serves the blobs and manifests stored in dir (another
// registry's Registry.Dir), for a second registry over the same content.
// The default is an empty store of its own.
func WithRegistryData(dir string) RegistryOption {
	return func(o *registryOptions) { o.dataDir = dir }
}

// WithRegistryHtpasswd requires basic authentication against the htpasswd
// file at path. The default is no authentication.
func WithRegistryHtpasswd(path string) RegistryOption {
	return func(o *registryOptions) { o.htpasswd = path }
}

// StartRegistry starts the real distribution registry (v3) on a free port
// with filesystem storage, by default in a temp dir. It serves HTTP Range
// GETs on blobs.
func StartRegistry(t testing.TB, opts ...RegistryOption) *Registry {
	t.Helper()
	var o registryOptions
	for _, opt := range opts {
		opt(&o)
	}
	bin := Tool(t, "registry")
	dir := t.TempDir()
	if o.dataDir == "" {
		o.dataDir = dir
	}
	host := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	var auth string
	if o.htpasswd != "" {
		auth = fmt.Sprintf("auth:\n  htpasswd:\n    realm: lazysnap-test\n    path: %s\n", o.htpasswd)
	}
	var proxy string
	if o.proxyURL != "" {
		proxy = fmt.Sprintf("proxy:\n  remoteurl: %s\n", o.proxyURL)
	}
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
%s%shttp:
  addr: %s
`, filepath.Join(o.dataDir, "data"), auth, proxy, host)
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	StartProcess(t, "registry", exec.Command(bin, "serve", cfgPath))
	WaitTCP(t, host, 30*time.Second)
	return &Registry{Host: host, Dir: o.dataDir}
}
