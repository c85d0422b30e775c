package testenv

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
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
	// program, if set, is added in a layer of its own.
	program *critestProgram
}

// critestProgram is a Go program of testdata/, built static and owned by root.
type critestProgram struct {
	src  string // directory under testdata
	path string // where in the image
	mode int64
}

// CritestSandboxImage is the pause image the CRI plugin of a critest
// containerd runs its pod sandboxes from: critest pulls it by this name too.
const CritestSandboxImage = "registry.k8s.io/pause:3.9"

// critestImages lists what pkg/validate and pkg/framework of cri-tools
// v1.37.0 pull on Linux. test-image-digest is absent: critest pins it by the
// digest of the upstream manifest, which no substitute can have.
func critestImages() []critestImage {
	const staging = "gcr.io/k8s-staging-cri-tools/"
	marker := func(n string) map[string]string { return map[string]string{"/" + n: ""} }
	imgs := []critestImage{
		{refs: []string{"registry.k8s.io/e2e-test-images/busybox:1.29-2"}},
		{refs: []string{CritestSandboxImage, "k8s.gcr.io/pause:3.9"}, cmd: []string{"/pause"},
			program: &critestProgram{src: "pause", path: "/pause", mode: 0o755}},
		// nginx's pid file and process name matter: the HostPID tests read
		// /var/run/nginx.pid and look for it with `pidof nginx`.
		{refs: []string{"registry.k8s.io/e2e-test-images/nginx:1.14-2"}, cmd: webServer("nginx", 80),
			files: map[string]string{"/usr/share/nginx/html/index.html": "nginx substitute\n"}},
		{refs: []string{"registry.k8s.io/e2e-test-images/httpd:2.4.39-4"}, cmd: webServer("httpd", 80),
			files: map[string]string{"/usr/share/nginx/html/index.html": "httpd substitute\n"}},
		{refs: []string{staging + "hostnet-nginx-" + runtime.GOARCH + ":latest"}, cmd: webServer("nginx", 12003),
			files: map[string]string{"/usr/share/nginx/html/index.html": "hostnet nginx substitute\n"}},
		{refs: []string{"registry.k8s.io/e2e-test-images/nonewprivs:1.3"}, cmd: []string{"/usr/local/bin/nonewprivs"},
			program: &critestProgram{src: "nonewprivs", path: "/usr/local/bin/nonewprivs", mode: 0o4755}},
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

// webServer serves /usr/share/nginx/html with busybox httpd in the
// background of a shell that stays PID 1, as nginx's master process does:
// critest looks for "master process" in /proc/1/cmdline (here the shell's
// $0), reads the server's pid from /var/run/NAME.pid and finds it with
// `pidof NAME`. The server is exec'd through a link named procName (the
// kernel names the process after it) with argv[0] "httpd" (busybox picks the
// applet by it).
func webServer(procName string, port int) []string {
	script := fmt.Sprintf("trap 'kill $pid; exit 0' TERM INT\n"+
		"echo %[1]s starting >&2\n"+
		"exec -a httpd /usr/sbin/%[1]s -f -v -p %[2]d -h /usr/share/nginx/html &\n"+
		"pid=$!\necho $pid > /var/run/%[1]s.pid\nwait $pid\n", procName, port)
	return []string{"/bin/sh", "-c", script, procName + ": master process"}
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
	if ci.program != nil {
		layer, err := programLayer(*ci.program)
		if err != nil {
			return nil, err
		}
		adds = append(adds, mutate.Addendum{Layer: layer, History: v1.History{CreatedBy: ci.program.src}})
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
	if err := writeTextFiles(tw, dirs, files, 0o644); err != nil {
		return nil, err
	}
	if err := writeTextFiles(tw, dirs, busyboxScripts(), 0o755); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("closing base layer: %w", err)
	}
	return bytesLayer(buf.Bytes())
}

// writeFullBusybox lays busybox out as the busybox image does: every applet
// a hard link to /bin/busybox in /bin (critest masks /bin/ls and expects
// only ls to go; masking a symlink would mask busybox itself).
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
	out, err := exec.Command(hostBusybox, "--list").Output()
	if err != nil {
		return fmt.Errorf("listing busybox applets: %w", err)
	}
	var links []string
	for _, applet := range strings.Fields(string(out)) {
		if applet != "busybox" {
			links = append(links, "bin/"+applet)
		}
	}
	// The web server substitutes run busybox under these names.
	links = append(links, "usr/sbin/nginx", "usr/sbin/httpd")
	for _, l := range links {
		if err := dirs.ensure("/" + path.Dir(l)); err != nil {
			return err
		}
		// A link entry carries its target's mode, as Docker and BuildKit
		// write it: containerd's applier chmods the shared inode to the mode
		// of every link entry, while lazysnap keeps the target's
		// (docs/compat.md, critest).
		hdr := &tar.Header{Typeflag: tar.TypeLink, Name: l, Linkname: "bin/busybox", Mode: 0o755,
			ModTime: fixedTime()}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("writing link %s: %w", l, err)
		}
	}
	return nil
}

// busyboxScripts stand in for the applets critest runs that Debian's
// busybox-static lacks.
func busyboxScripts() map[string]string {
	return map[string]string{
		// pgrep NAME: the PIDs whose process name contains NAME.
		"/bin/pgrep": "#!/bin/sh\nfound=1\nfor d in /proc/[0-9]*; do\n" +
			"  read -r c < \"$d/comm\" 2>/dev/null || continue\n" +
			"  case \"$c\" in *\"$1\"*) echo \"${d#/proc/}\"; found=0;; esac\ndone\nexit $found\n",
		// ipcs -m: the System V shared memory segments of this IPC namespace.
		"/bin/ipcs": "#!/bin/sh\necho '------ Shared Memory Segments --------'\n" +
			"echo 'key        shmid      owner      perms      bytes      nattch'\n" +
			"awk 'NR > 1 { printf \"0x%08x %-10s %-10s %-10s %-10s %s\\n\", $1, $2, $8, $3, $4, $7 }' /proc/sysvipc/shm\n",
	}
}

// writeTextFiles writes files in path order, so a layer's digest is the
// same on every run.
func writeTextFiles(tw *tar.Writer, dirs *dirWriter, files map[string]string, mode int64) error {
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
		if _, err := writeFile(tw, p, mode, int64(len(content)), strings.NewReader(content)); err != nil {
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
	if err := writeTextFiles(tw, newDirWriter(tw), files, 0o644); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("closing layer: %w", err)
	}
	return bytesLayer(buf.Bytes())
}

// programLayer builds testdata/SRC (static, no cgo) and puts it at its
// path with its mode (nonewprivs is setuid root).
func programLayer(p critestProgram) (v1.Layer, error) {
	dir, err := os.MkdirTemp("", "critest-program-")
	if err != nil {
		return nil, fmt.Errorf("creating build dir: %w", err)
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, p.src)
	src := filepath.Join(RepoRoot(), "internal", "testenv", "testdata", p.src, "main.go")
	cmd := exec.Command("go", "build", "-o", bin, src)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("building %s: %w: %s", src, err, out)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", bin, err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := newDirWriter(tw).ensure(path.Dir(p.path)); err != nil {
		return nil, err
	}
	if _, err := writeFile(tw, p.path, p.mode, int64(len(data)), bytes.NewReader(data)); err != nil {
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
