package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/internal/criproxy/criproxytest"
	"github.com/lazysnap/lazysnap/internal/testenv"
)

// privateEnv is a private registry (htpasswd) whose eStargz image was
// pulled with credentials through lazysnap's CRI image-service proxy.
type privateEnv struct {
	cd       *testenv.Containerd
	ls       *testenv.Lazysnap
	img      *testenv.Image
	ref      string
	password string
	layers   int
}

func startPrivateEnv(t *testing.T, extraConfig string) *privateEnv {
	t.Helper()
	requireLazyBinaries(t)
	t.Setenv("DOCKER_CONFIG", t.TempDir()) // no other credentials anywhere
	reg := testenv.StartRegistry(t)
	pause := testenv.BuildPauseImage(t, reg)
	p := &privateEnv{password: secret(t)}
	p.img = testenv.BuildImage(t, reg, "private/app:gzip", smallImageLayers()...)
	runBinary(t, testenv.LazyconvBin(), "convert", "--plain-http", p.img.Ref, reg.Ref("private/app:esgz"))
	private := criproxytest.StartAuthRegistry(t, reg, "kubelet", p.password)
	p.cd = testenv.StartContainerd(t, testenv.WithNamespace("k8s.io"), testenv.WithLazysnap(),
		testenv.WithRegistryHost(reg.Host), testenv.WithRegistryHost(private.Host), testenv.WithCRI(pause, "lazysnap"))
	imageSock := filepath.Join(filepath.Dir(p.cd.Address), "cri-image.sock")
	p.ls = testenv.StartLazysnap(t, p.cd, testenv.WithLazysnapConfig(lazysnapConfig(p.cd)+rebootConfig+extraConfig+
		fmt.Sprintf("[cri_image_service]\naddress = %q\ncontainerd_address = %q\n", imageSock, p.cd.Address)))
	p.ref = private.Ref("private/app:esgz")
	if _, err := crictlVia(t, p.cd, imageSock, "pull", "--creds", "kubelet:"+p.password, p.ref); err != nil {
		t.Fatal(err)
	}
	p.layers = len(lazyMounts(t, p.ls.Root))
	if p.layers == 0 {
		t.Fatal("the private image was not mounted lazily")
	}
	return p
}

// killFused SIGKILLs fused and waits until serve has started another.
func (p *privateEnv) killFused(t *testing.T) {
	t.Helper()
	old := p.ls.FusedPID()
	if old == 0 {
		t.Fatal("no fused runs")
	}
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for pid := p.ls.FusedPID(); pid == 0 || pid == old; pid = p.ls.FusedPID() {
		if time.Now().After(deadline) {
			t.Fatal("serve did not start fused again")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// crashDaemons SIGKILLs serve and fused together, as a crash of the node's
// lazysnap does: every FUSE connection closes (so no mount is handed over)
// and every credential held in memory is gone. serve is then started
// again, and starts fused, which mounts the layers again.
func (p *privateEnv) crashDaemons(t *testing.T) {
	t.Helper()
	old := p.ls.FusedPID()
	if old == 0 {
		t.Fatal("no fused runs")
	}
	p.ls.Kill()
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for p.ls.FusedPID() == old {
		time.Sleep(20 * time.Millisecond)
	}
	p.ls.Restart()
}

// runListing runs a container of the image listing /data.
func (p *privateEnv) runListing(id string) (string, error) {
	return p.cd.Ctr(p.cd.RunArgs("lazysnap", p.ref, id, testenv.ListingCommand("/data")...)...)
}

// TestPersistedCredentialsRemountPrivateLayers: with credentials.persist
// on, the credentials of the kubelet's pull are kept in a 0600 file in the
// 0700 root, and after serve and fused crashed together (every mount and
// every credential in memory lost, as at a reboot) the new fused loads them
// and mounts the private image's layers again: a new container reads every
// file right, and no pull is needed.
func TestPersistedCredentialsRemountPrivateLayers(t *testing.T) {
	p := startPrivateEnv(t, "[credentials]\npersist = true\n")
	file := filepath.Join(p.ls.Root, "credentials.json")
	st, err := os.Stat(file)
	if err != nil {
		t.Fatalf("credentials were not persisted: %v", err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600", file, st.Mode().Perm())
	}
	if rst, err := os.Stat(p.ls.Root); err != nil || rst.Mode().Perm() != 0o700 {
		t.Errorf("state root mode %v (%v), want 0700", rst.Mode().Perm(), err)
	}

	p.crashDaemons(t)
	deadline := time.Now().Add(time.Minute)
	for i := 0; ; i++ {
		out, err := p.runListing(fmt.Sprintf("after-restart-%d", i))
		if err == nil {
			assertListing(t, p.img, "/data", out)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the private image's layers were not mounted again: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if n := len(lazyMounts(t, p.ls.Root)); n != p.layers {
		t.Errorf("%d lazy mounts after fused restarted, want %d", n, p.layers)
	}
}

// TestUnpersistedCredentialsFailLoudly: with credentials.persist off (the
// default), after serve and fused crashed together no process has the
// private registry's credentials: containers of the image fail to start,
// naming the image and the layer, instead of starting on an empty layer,
// and no file under lazysnap's root holds the password.
func TestUnpersistedCredentialsFailLoudly(t *testing.T) {
	p := startPrivateEnv(t, "")
	p.crashDaemons(t)
	deadline := time.Now().Add(time.Minute)
	for i := 0; ; i++ {
		out, err := p.runListing(fmt.Sprintf("after-restart-%d", i))
		if err == nil {
			t.Fatalf("a container of the private image started without credentials; it saw:\n%s", firstLines(out, 10))
		}
		if msg := err.Error(); strings.Contains(msg, "is not mounted") && strings.Contains(msg, "private/app:esgz") &&
			strings.Contains(msg, "sha256:") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("container start failed with %v; want an error naming the image and the layer", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if _, err := os.Stat(filepath.Join(p.ls.Root, "credentials.json")); !os.IsNotExist(err) {
		t.Errorf("credentials.json exists with credentials.persist off: %v", err)
	}
	assertNoFileHolds(t, p.ls.Root, p.password)
}

// TestFusedKillKeepsCredentials: with credentials.persist off, a fused
// killed alone loses nothing: serve hands the next fused the mounts and
// the credentials it passed on, so a container of the private image reads
// every file right, uncached ones included, without a new pull.
func TestFusedKillKeepsCredentials(t *testing.T) {
	p := startPrivateEnv(t, "")
	p.killFused(t)
	out, err := p.runListing("after-fused-kill")
	if err != nil {
		t.Fatalf("a container of the private image failed after a fused kill: %v", err)
	}
	assertListing(t, p.img, "/data", out)
}
