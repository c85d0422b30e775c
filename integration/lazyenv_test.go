package integration

import (
	"bytes"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/lazysnap/lazysnap/internal/testenv"
)

// lazyEnv is the full lazy-pull stack: the registry, a counting proxy in
// front of it (every pull goes through the proxy, so its counters say what
// containerd and lazysnap fetched), containerd and lazysnap serve.
type lazyEnv struct {
	reg   *testenv.Registry
	proxy *testenv.CountingProxy
	cd    *testenv.Containerd
	ls    *testenv.Lazysnap
	// extraConfig is appended to serve's config file.
	extraConfig string
}

// requireLazyBinaries skips only when the binaries were not built: `make
// test` builds them first, so in CI the lazy tests always run.
func requireLazyBinaries(t *testing.T) {
	t.Helper()
	testenv.RequireFUSE(t)
	if !haveLazyBinaries() {
		t.Skip("needs bin/lazysnap and bin/lazyconv: run make build")
	}
}

// startLazyEnv starts the whole stack.
func startLazyEnv(t *testing.T, opts ...testenv.ContainerdOption) *lazyEnv {
	t.Helper()
	e := newLazyEnv(t)
	e.start(t, opts...)
	return e
}

// newLazyEnv starts the registry and the counting proxy only, so a test can
// push images containerd needs at start (the CRI sandbox image).
func newLazyEnv(t *testing.T) *lazyEnv {
	t.Helper()
	requireLazyBinaries(t)
	e := &lazyEnv{reg: testenv.StartRegistry(t)}
	e.proxy = testenv.StartCountingProxy(t, e.reg.Host)
	return e
}

// start starts containerd (extra options appended) and lazysnap serve.
func (e *lazyEnv) start(t *testing.T, opts ...testenv.ContainerdOption) {
	t.Helper()
	opts = append([]testenv.ContainerdOption{testenv.WithLazysnap(),
		testenv.WithRegistryHost(e.reg.Host), testenv.WithRegistryHost(e.proxy.Host)}, opts...)
	e.cd = testenv.StartContainerd(t, opts...)
	e.ls = testenv.StartLazysnap(t, e.cd, testenv.WithLazysnapConfig(lazysnapConfig(e.cd)+e.extraConfig))
}

// lazysnapConfig is the serve config the tests use: the registries are
// plain HTTP, described in containerd's hosts dir (docs/config.md).
func lazysnapConfig(cd *testenv.Containerd) string {
	return fmt.Sprintf("hosts_dir = %q\nwatch_interval = \"500ms\"\n[containerd]\naddress = %q\n", cd.HostsDir, cd.Address)
}

// convert runs `lazyconv convert --plain-http SRC DST` on the registry
// directly (not through the proxy, so conversion is not counted).
func (e *lazyEnv) convert(t *testing.T, src *testenv.Image, dstRepoTag string) string {
	t.Helper()
	dst := e.reg.Ref(dstRepoTag)
	runBinary(t, testenv.LazyconvBin(), "convert", "--plain-http", src.Ref, dst)
	return dst
}

// lazysnapPull runs `lazysnap pull` for ref against the test containerd.
func (e *lazyEnv) lazysnapPull(t *testing.T, ref string) string {
	t.Helper()
	return runBinary(t, testenv.LazysnapBin(), "pull", "--address", e.cd.Address, "--namespace", e.cd.Namespace,
		"--hosts-dir", e.cd.HostsDir, "--snapshotter", "lazysnap", "--plain-http", ref)
}

// run runs cmd in a new container of ref on lazysnap and returns its stdout.
func (e *lazyEnv) run(t *testing.T, ref, id string, cmd ...string) string {
	t.Helper()
	return e.cd.MustCtr(t, e.cd.RunArgs("lazysnap", ref, id, cmd...)...)
}

func runBinary(t testing.TB, bin string, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\nstdout: %s\nstderr: %s", bin, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// lazyMounts returns the FUSE mounts below root (lazysnap's layer mounts).
func lazyMounts(t *testing.T, root string) []testenv.Mount {
	t.Helper()
	infos, err := testenv.MountInfo()
	if err != nil {
		t.Fatal(err)
	}
	var out []testenv.Mount
	for _, m := range infos {
		if strings.HasPrefix(m.FSType, "fuse") && strings.HasPrefix(m.MountPoint, root+"/") {
			out = append(out, m)
		}
	}
	return out
}
