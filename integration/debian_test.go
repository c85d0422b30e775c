package integration

import (
	"os"
	"strings"
	"testing"

	"github.com/lazysnap/lazysnap/internal/testenv"
)

// TestDebianImage builds a Debian image the way a Dockerfile would (minbase,
// then an apt-get install layer), runs it on overlayfs and checks that the
// package is installed and the base layer's files are there. The first run
// needs the Debian mirror, so it runs only with LAZYSNAP_TEST_DEBIAN=1.
func TestDebianImage(t *testing.T) {
	testenv.RequireRoot(t)
	if os.Getenv("LAZYSNAP_TEST_DEBIAN") == "" {
		t.Skip("set LAZYSNAP_TEST_DEBIAN=1 (first run downloads from the Debian mirror)")
	}
	reg := testenv.StartRegistry(t)
	img := testenv.DebianImage(t, reg, "debian:test", []string{"busybox"})
	cd := testenv.StartContainerd(t, testenv.WithRegistryHost(reg.Host))

	cd.MustCtr(t, cd.PullArgs(img.Ref, "overlayfs")...)
	out := cd.MustCtr(t, cd.RunArgs("overlayfs", img.Ref, "debian", "/bin/sh", "-c",
		"dpkg-query -W -f '${Status}\\n' busybox; cat /etc/debian_version")...)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || lines[0] != "install ok installed" || !strings.HasPrefix(lines[1], "12.") {
		t.Fatalf("container printed %q; want busybox installed on Debian 12", out)
	}
}
