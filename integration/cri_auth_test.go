package integration

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lazysnap/lazysnap/internal/criproxy/criproxytest"
	"github.com/lazysnap/lazysnap/internal/testenv"
)

// TestCRIPrivateRegistryLazy is the kubelet's path to a private registry:
// crictl pulls with credentials through lazysnap's CRI image-service proxy,
// with no docker config anywhere, and the eStargz layers are still mounted
// lazily: the credentials reached fused, which fetches them. Afterwards no
// file under lazysnap's root holds the password.
func TestCRIPrivateRegistryLazy(t *testing.T) {
	requireLazyBinaries(t)
	// lazysnap inherits this: its docker config keychain finds nothing.
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	reg := testenv.StartRegistry(t)
	pause := testenv.BuildPauseImage(t, reg)
	img := testenv.BuildImage(t, reg, "private/app:gzip", smallImageLayers()...)
	runBinary(t, testenv.LazyconvBin(), "convert", "--plain-http", img.Ref, reg.Ref("private/app:esgz"))
	user, password := "kubelet", secret(t)
	private := criproxytest.StartAuthRegistry(t, reg, user, password)
	cd := testenv.StartContainerd(t, testenv.WithNamespace("k8s.io"), testenv.WithLazysnap(),
		testenv.WithRegistryHost(reg.Host), testenv.WithRegistryHost(private.Host), testenv.WithCRI(pause, "lazysnap"))
	imageSock := filepath.Join(filepath.Dir(cd.Address), "cri-image.sock")
	ls := testenv.StartLazysnap(t, cd, testenv.WithLazysnapConfig(lazysnapConfig(cd)+
		fmt.Sprintf("[cri_image_service]\naddress = %q\ncontainerd_address = %q\n", imageSock, cd.Address)))
	ref := private.Ref("private/app:esgz")

	if _, err := crictlVia(t, cd, imageSock, "pull", ref); err == nil {
		t.Fatal("pull without credentials succeeded; the registry must require them")
	}
	if _, err := crictlVia(t, cd, imageSock, "pull", "--creds", user+":"+password, ref); err != nil {
		t.Fatal(err)
	}
	stored, total := layersInContentStore(t, cd, ref)
	if stored != 0 {
		t.Errorf("the pull downloaded %d of %d eStargz layers; want all mounted lazily", stored, total)
	}
	if n := len(lazyMounts(t, ls.Root)); n != total {
		t.Errorf("%d FUSE mounts under lazysnap's root after the pull; want %d (one per layer)", n, total)
	}
	out := cd.RunPodContainer(t, "private-listing", ref, testenv.ListingCommand("/data"))
	assertListing(t, img, "/data", out)
	assertNoFileHolds(t, ls.Root, password)
}

// crictlVia runs crictl with containerd as the runtime endpoint and sock
// as the image endpoint, as a kubelet with --image-service-endpoint does.
func crictlVia(t *testing.T, cd *testenv.Containerd, sock string, args ...string) (string, error) {
	t.Helper()
	full := append([]string{"--runtime-endpoint", "unix://" + cd.Address, "--image-endpoint", "unix://" + sock,
		"--timeout", "5m"}, args...)
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(testenv.Tool(t, "crictl"), full...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("crictl %s: %w: %s", args[0], err, stderr.String())
	}
	return stdout.String(), nil
}

// assertNoFileHolds fails if a regular file under root contains secret.
// The layer mounts are skipped: they show image content, not lazysnap's.
func assertNoFileHolds(t *testing.T, root, secret string) {
	t.Helper()
	skip := map[string]bool{}
	for _, m := range lazyMounts(t, root) {
		skip[m.MountPoint] = true
	}
	checked := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && skip[path] {
			return filepath.SkipDir
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		checked++
		if bytes.Contains(b, []byte(secret)) {
			t.Errorf("%s holds the registry password", strings.TrimPrefix(path, root+"/"))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walking %s: %v", root, err)
	}
	if checked == 0 {
		t.Fatalf("no files under %s to check", root)
	}
}

func secret(t *testing.T) string {
	t.Helper()
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "pw-" + hex.EncodeToString(b)
}
