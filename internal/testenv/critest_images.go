package testenv

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"runtime"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// CritestRegistries are the public registries critest v1.37.0 pulls from.
// WithCritest points each at the test registry with a hosts.toml, so critest
// keeps its own image names and the substitutes are found by containerd and
// by lazysnap alike.
func CritestRegistries() []string {
	return []string{"registry.k8s.io", "gcr.io", "k8s.gcr.io"}
}

// critestImage is a substitute for one image critest pulls, built from the
// image's Dockerfile in cri-tools (images/) on busybox-static.
type critestImage struct {
	// refs are the public names (the first is built, the others are tags of
	// the very same manifest).
	refs  []string
	user  string
	cmd   []string
	files map[string]string
}

// critestImages lists what pkg/validate and pkg/framework of cri-tools
// v1.37.0 pull on Linux. test-image-digest is absent: critest pins it by the
// digest of the upstream manifest, which no substitute can have.
func critestImages() []critestImage {
	const staging = "gcr.io/k8s-staging-cri-tools/"
	marker := func(n string) map[string]string { return map[string]string{"/" + n: ""} }
	imgs := []critestImage{
		{refs: []string{"registry.k8s.io/e2e-test-images/busybox:1.29-2"}},
		{refs: []string{"registry.k8s.io/pause:3.9", "k8s.gcr.io/pause:3.9"}, cmd: []string{"/bin/sh", "-c", pauseScript}},
		// nginx's pid file and process name matter: the HostPID tests read
		// /var/run/nginx.pid and look for it with `pidof nginx`.
		{refs: []string{"registry.k8s.io/e2e-test-images/nginx:1.14-2"}, cmd: webServer("nginx", 80),
			files: map[string]string{"/usr/share/nginx/html/index.html": "nginx substitute\n"}},
		{refs: []string{"registry.k8s.io/e2e-test-images/httpd:2.4.39-4"}, cmd: webServer("httpd", 80),
			files: map[string]string{"/usr/share/nginx/html/index.html": "httpd substitute\n"}},
		{refs: []string{staging + "hostnet-nginx-" + runtime.GOARCH + ":latest"}, cmd: webServer("nginx", 12003),
			files: map[string]string{"/usr/share/nginx/html/index.html": "hostnet nginx substitute\n"}},
		{refs: []string{staging + "test-image-user-uid:latest"}, user: "1002"},
		{refs: []string{staging + "test-image-user-username:latest"}, user: "www-data"},
		{refs: []string{staging + "test-image-user-uid-group:latest"}, user: "1003:1004"},
		{refs: []string{staging + "test-image-user-username-group:latest"}, user: "www-data:1004"},
		{refs: []string{staging + "test-image-predefined-group:latest"}, user: "1000", files: map[string]string{
			"/etc/passwd": busyboxPasswd + "default-user:x:1000:1000:Linux User,,,:/home/default-user:/bin/sh\n",
			"/etc/group":  busyboxGroup + "default-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n",
		}},
		{refs: []string{staging + "test-image-tags:1", staging + "test-image-tags:2", staging + "test-image-tags:3"},
			files: marker("same-image")},
		{refs: []string{staging + "test-image-tag:test", staging + "test-image-tag:all"}, files: marker("test-image-tag")},
		{refs: []string{staging + "test-image-latest:latest"}, files: marker("test-image-latest")},
	}
	for _, n := range []string{"test-image-1", "test-image-2", "test-image-3"} {
		imgs = append(imgs, critestImage{refs: []string{staging + n + ":latest"}, files: marker(n)})
	}
	return imgs
}

// webServer serves /usr/share/nginx/html with busybox httpd under the
// process name procName: exec'd through a link of that name (the kernel
// names the process after it) with argv[0] "httpd" (busybox picks the
// applet by it). The pid file and the log line are what critest checks.
func webServer(procName string, port int) []string {
	return []string{"/bin/sh", "-c", fmt.Sprintf("echo %s starting >&2; echo $$ > /var/run/%s.pid; "+
		"exec -a httpd /usr/sbin/%s -f -v -p %d -h /usr/share/nginx/html", procName, procName, procName, port)}
}

// busyboxPasswd and busyboxGroup are those of the busybox image the
// upstream test images are built FROM (www-data is the user some name).
const (
	busyboxPasswd = "root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\n" +
		"bin:x:2:2:bin:/bin:/bin/false\nsys:x:3:3:sys:/dev:/bin/false\nsync:x:4:100:sync:/bin:/bin/sync\n" +
		"mail:x:8:8:mail:/var/spool/mail:/bin/false\nwww-data:x:33:33:www-data:/var/www:/bin/false\n" +
		"operator:x:37:37:Operator:/var:/bin/false\nnobody:x:65534:65534:nobody:/home:/bin/false\n"
	busyboxGroup = "root:x:0:\ndaemon:x:1:\nbin:x:2:\nsys:x:3:\nadm:x:4:\ntty:x:5:\ndisk:x:6:\nwheel:x:10:\n" +
		"mail:x:8:\nwww-data:x:33:\noperator:x:37:\nusers:x:100:\nnogroup:x:65533:\nnobody:x:65534:\n"
)

// PushCritestImages builds the substitutes, converts each to eStargz with
// bin/lazyconv and pushes the eStargz image to reg under the public
// repository path (registry.k8s.io/pause:3.9 becomes HOST/pause:3.9), the
// path a hosts.toml mirror asks for. Both snapshotters pull these: eStargz
// is gzip to overlayfs, and lazysnap mounts it lazily.
func PushCritestImages(t testing.TB, reg *Registry) {
	t.Helper()
	base, err := critestBaseLayer()
	if err != nil {
		t.Fatal(err)
	}
	for _, ci := range critestImages() {
		if err := pushCritestImage(reg, base, ci); err != nil {
			t.Fatal(err)
		}
	}
}

func pushCritestImage(reg *Registry, base v1.Layer, ci critestImage) error {
	paths := make([]string, len(ci.refs))
	for i, ref := range ci.refs {
		_, p, ok := strings.Cut(ref, "/")
		if !ok {
			return fmt.Errorf("critest image %q has no registry", ref)
		}
		paths[i] = p
	}
	img, err := ci.build(base)
	if err != nil {
		return fmt.Errorf("building %s: %w", ci.refs[0], err)
	}
	src := reg.Ref("critest-src/" + paths[0])
	if err := push(img, &Image{Ref: src}); err != nil {
		return err
	}
	dst := reg.Ref(paths[0])
	out, err := exec.Command(LazyconvBin(), "convert", "--plain-http", src, dst).CombinedOutput()
	if err != nil {
		return fmt.Errorf("lazyconv convert %s: %w: %s", src, err, out)
	}
	for _, p := range paths[1:] {
		if err := retag(dst, reg.Ref(p)); err != nil {
			return err
		}
	}
	return nil
}

// retag pushes the manifest of src under dst, so both names have one digest.
func retag(src, dst string) error {
	srcRef, err := name.ParseReference(src, name.Insecure)
	if err != nil {
		return fmt.Errorf("parsing %s: %w", src, err)
	}
	dstRef, err := name.ParseReference(dst, name.Insecure)
	if err != nil {
		return fmt.Errorf("parsing %s: %w", dst, err)
	}
	desc, err := remote.Get(srcRef)
	if err != nil {
		return fmt.Errorf("getting %s: %w", src, err)
	}
	if err := remote.Put(dstRef, desc); err != nil {
		return fmt.Errorf("pushing %s: %w", dst, err)
	}
	return nil
}

// build is the base layer plus, like a Dockerfile ADD or RUN, one layer of
// the image's own files.
func (ci critestImage) build(base v1.Layer) (v1.Image, error) {
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	adds := []mutate.Addendum{{Layer: base, History: v1.History{CreatedBy: "busybox-static"}}}
	if len(ci.files) > 0 {
		layer, err := filesLayer(ci.files)
		if err != nil {
			return nil, err
		}
		adds = append(adds, mutate.Addendum{Layer: layer, History: v1.History{CreatedBy: "critest substitute"}})
	}
	img, err := mutate.Append(img, adds...)
	if err != nil {
		return nil, fmt.Errorf("appending layers: %w", err)
	}
	cmd := ci.cmd
	if cmd == nil {
		cmd = []string{"sh"}
	}
	if img, err = withRunConfig(img, cmd); err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.Config.User = ci.user
	return mutate.ConfigFile(img, cf)
}

// critestBaseLayer is a busybox image's root filesystem: busybox-static with
// a link for every applet (critest runs top, hostname, nc, pidof...), the
// busybox image's users and groups, and the directories tests write to.
func critestBaseLayer() (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := newDirWriter(tw)
	for _, d := range []string{"/bin", "/sbin", "/usr/bin", "/usr/sbin", "/etc", "/tmp", "/root", "/home",
		"/var/run", "/var/www", "/usr/share/nginx/html"} {
		if err := dirs.ensure(d); err != nil {
			return nil, err
		}
	}
	if err := writeFullBusybox(tw, dirs); err != nil {
		return nil, err
	}
	files := map[string]string{"/etc/passwd": busyboxPasswd, "/etc/group": busyboxGroup,
		"/usr/share/nginx/html/index.html": "critest substitute\n"}
	if err := writeTextFiles(tw, dirs, files); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("closing base layer: %w", err)
	}
	return bytesLayer(buf.Bytes())
}

func writeFullBusybox(tw *tar.Writer, dirs *dirWriter) error {
	bb, err := os.Open(hostBusybox)
	if err != nil {
		return fmt.Errorf("opening busybox: %w", err)
	}
	defer bb.Close()
	st, err := bb.Stat()
	if err != nil {
		return fmt.Errorf("stat busybox: %w", err)
	}
	if _, err := writeFile(tw, "/bin/busybox", 0o755, st.Size(), bb); err != nil {
		return err
	}
	out, err := exec.Command(hostBusybox, "--list-full").Output()
	if err != nil {
		return fmt.Errorf("listing busybox applets: %w", err)
	}
	// The web server substitutes exec busybox under these names.
	links := append(strings.Fields(string(out)), "usr/sbin/nginx", "usr/sbin/httpd")
	seen := map[string]bool{"bin/busybox": true}
	for _, l := range links {
		if seen[l] {
			continue
		}
		seen[l] = true
		if err := dirs.ensure("/" + path.Dir(l)); err != nil {
			return err
		}
		hdr := &tar.Header{Typeflag: tar.TypeSymlink, Name: l, Linkname: "/bin/busybox", Mode: 0o777,
			ModTime: fixedTime()}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("writing link %s: %w", l, err)
		}
	}
	return nil
}

// writeTextFiles writes files in path order, so a layer's digest is the
// same on every run.
func writeTextFiles(tw *tar.Writer, dirs *dirWriter, files map[string]string) error {
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		content := files[p]
		if err := dirs.ensure(path.Dir(p)); err != nil {
			return err
		}
		if _, err := writeFile(tw, p, 0o644, int64(len(content)), strings.NewReader(content)); err != nil {
			return err
		}
	}
	return nil
}

// filesLayer is a layer of text files (parents included, as a Dockerfile
// ADD writes them).
func filesLayer(files map[string]string) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := writeTextFiles(tw, newDirWriter(tw), files); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("closing layer: %w", err)
	}
	return bytesLayer(buf.Bytes())
}

// bytesLayer gzips an uncompressed tar into an OCI layer.
func bytesLayer(tarData []byte) (v1.Layer, error) {
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(tarData)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("making layer: %w", err)
	}
	return l, nil
}
