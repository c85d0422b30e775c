package integration

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/lazysnap/lazysnap/internal/testenv"
)

// TestCompatPullFromEnv runs `lazysnap pull` with the containerd it talks to
// given only by CONTAINERD_ADDRESS and CONTAINERD_NAMESPACE, as a user of ctr
// or nerdctl has them set: the pull reaches the test containerd (not the
// default socket) and stays lazy.
func TestCompatPullFromEnv(t *testing.T) {
	e := startLazyEnv(t, testenv.WithNamespace("compat-env"))
	img := testenv.BuildImage(t, e.reg, "small:gzip", smallImageLayers()...)
	ref := testenv.RefVia(e.convert(t, img, "small:esgz"), e.proxy.Host)

	cmd := exec.Command(testenv.LazysnapBin(), "pull", "--hosts-dir", e.cd.HostsDir, "--plain-http", ref)
	cmd.Env = append(os.Environ(), "CONTAINERD_ADDRESS="+e.cd.Address, "CONTAINERD_NAMESPACE="+e.cd.Namespace)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("lazysnap pull with CONTAINERD_ADDRESS set: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	if !strings.Contains(stdout.String(), "remote (lazy)") {
		t.Errorf("pull output has no lazy layer:\n%s", stdout.String())
	}
	if stored, total := layersInContentStore(t, e.cd, ref); stored != 0 {
		t.Errorf("%d of %d layers downloaded; want all lazy", stored, total)
	}
	assertListing(t, img, "/data", e.run(t, ref, "env-listing", testenv.ListingCommand("/data")...))
}
