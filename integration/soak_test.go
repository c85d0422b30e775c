package integration

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/internal/testenv"
)

// soakDuration is how long TestSoak runs; CI runs the default, `make soak`
// ten minutes.
var soakDuration = flag.Duration("soak", 45*time.Second, "how long TestSoak keeps containers reading under faults")

// Soak parameters: 3 images x 7 containers, each reading a random file of
// its image every half second.
const (
	soakImages        = 3
	soakPerImage      = 7
	soakReadTimeout   = 5 * time.Second
	soakQuiet         = 3 * time.Second // between two faults
	soakRegistryFault = 4 * time.Second // how long the registry answers 503 or stalls
)

// soakConfig: a short read deadline, so a stalled registry fails reads
// instead of hanging them, quick restore retries, and a slow background
// fetch, so that the images stay partly uncached (and registry faults
// matter) for a while.
var soakConfig = fmt.Sprintf("[restore]\ntimeout = \"10s\"\nretry_interval = \"1s\"\n[fetch]\nread_timeout = %q\n"+
	"[background_fetch]\nbytes_per_second = 262144\n", soakReadTimeout.String())

// soakScript reads a random regular file of /data every half second and
// logs "EPOCH SHA256  PATH", or "EPOCH ERR PATH" when the read fails: the
// container logs failures instead of dying. It sleeps with read -t on a
// FIFO of the bind-mounted /out (a shell builtin): once its FUSE mount is
// dead nothing from the image can be executed, not even usleep. It stops
// when /out/stop appears.
const soakScript = `find /data -type f > /tmp/files
n=$(wc -l < /tmp/files)
while [ ! -e /out/stop ]; do
  i=$((RANDOM % n + 1))
  f=$(awk "NR==$i" /tmp/files)
  t=$(date +%s)
  if s=$(sha256sum "$f" 2>/dev/null); then echo "$t $s" >> /out/sums; else echo "$t ERR $f" >> /out/sums; fi
  read -t 0.5 _ <> /out/fifo
done
touch /out/done
`

// soakWindow is a span during which a fault was in effect.
type soakWindow struct {
	kind       string
	start, end time.Time
}

// soakContainer is one reading container of one generation.
type soakContainer struct {
	id, out string
	img     *testenv.Image
	gen     int
}

type soak struct {
	e       *faultEnv
	imgs    []*testenv.Image
	refs    []string
	outRoot string

	gens       []time.Time // when each generation of containers started
	containers []*soakContainer
	windows    []soakWindow

	bin      string    // the lazysnap binary serve runs, replaced by upgrades
	builds   [2]string // two builds of lazysnap, told apart by their version
	upgrades int
}

// TestSoak runs at least 20 containers reading random files of three lazy
// images for -soak (45 s by default), while faults are injected in turn:
// SIGKILL of fused, an upgrade of fused to another build, SIGKILL of
// serve, a containerd restart, the registry answering 503, the registry
// stalling. Every sum a container computed is
// checked against the image's files: no byte may be wrong. Read errors
// are counted by window: errors while the registry is down are allowed for
// data not cached yet; any other error fails the test, those of the
// containers reading while fused is killed too: serve holds their mounts'
// FUSE connections and the next fused resumes them (handover).
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("soak: not in -short")
	}
	s := &soak{outRoot: t.TempDir()}
	s.buildBinaries(t)
	s.e = startFaultEnvWith(t, soakConfig, []testenv.LazysnapOption{testenv.WithLazysnapBinary(s.bin)})
	s.buildImages(t)
	s.startGeneration(t)
	s.injectFaults(t, time.Now().Add(*soakDuration))
	s.stopGeneration(t, len(s.gens)-1)
	rep := s.analyse(t)
	t.Log(rep.String())
	if rep.wrongSums > 0 {
		t.Errorf("%d reads returned wrong bytes (%d bytes in those files)", rep.wrongSums, rep.wrongBytes)
	}
	for window, n := range rep.errors {
		if n > 0 && !strings.HasPrefix(window, "during registry") {
			t.Errorf("%d read errors %s", n, window)
		}
	}
	if rep.reads < int64(len(s.containers)) {
		t.Errorf("only %d reads by %d containers", rep.reads, len(s.containers))
	}
}

func (s *soak) buildImages(t *testing.T) {
	t.Helper()
	for i := range soakImages {
		dir := fmt.Sprintf("/data/img%d", i)
		big := testenv.GeneratedFiles(dir+"/big", 12, 256<<10, testenv.Random)
		text := testenv.GeneratedFiles(dir+"/text", 6, 1<<20, testenv.Compressible)
		small := testenv.GeneratedFiles(dir+"/small", 24, 16<<10, testenv.Random)
		img := testenv.BuildImage(t, s.e.reg, fmt.Sprintf("soak%d:gzip", i),
			testenv.BusyboxLayer(), testenv.LayerSpec{Files: big}, testenv.LayerSpec{Files: append(text, small...)})
		ref := testenv.RefVia(s.e.convert(t, img, fmt.Sprintf("soak%d:esgz", i)), s.e.faults.Host)
		s.e.lazysnapPull(t, ref)
		s.imgs, s.refs = append(s.imgs, img), append(s.refs, ref)
	}
}

// startGeneration starts soakImages x soakPerImage containers. A start is
// retried for a while: right after a fused restart, layers may still be
// being mounted again (a start then fails loudly, it never starts on an
// empty layer).
func (s *soak) startGeneration(t *testing.T) {
	t.Helper()
	gen := len(s.gens)
	s.gens = append(s.gens, time.Now())
	for i := range soakImages * soakPerImage {
		c := &soakContainer{id: fmt.Sprintf("soak-g%d-c%02d", gen, i), img: s.imgs[i%soakImages], gen: gen}
		c.out = filepath.Join(s.outRoot, c.id)
		if err := os.MkdirAll(c.out, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Mkfifo(filepath.Join(c.out, "fifo"), 0o644); err != nil {
			t.Fatal(err)
		}
		args := s.e.cd.RunFlags("lazysnap", append([]string{"--detach"}, testenv.BindMount(c.out, "/out")...)...)
		args = append(args, s.refs[i%soakImages], c.id, "/bin/sh", "-c", soakScript)
		deadline := time.Now().Add(time.Minute)
		for {
			_, err := s.e.cd.Ctr(args...)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("starting %s: %v", c.id, err)
			}
			_, _ = s.e.cd.Ctr("container", "rm", c.id)
			time.Sleep(500 * time.Millisecond)
		}
		s.containers = append(s.containers, c)
	}
}

// stopGeneration asks gen's containers to stop, waits a little for them,
// then removes them.
func (s *soak) stopGeneration(t *testing.T, gen int) {
	t.Helper()
	for _, c := range s.containers {
		if c.gen == gen {
			_ = os.WriteFile(filepath.Join(c.out, "stop"), nil, 0o644)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, c := range s.containers {
		for c.gen == gen && time.Now().Before(deadline) {
			if _, err := os.Stat(filepath.Join(c.out, "done")); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	for _, c := range s.containers {
		if c.gen == gen {
			_, _ = s.e.cd.Ctr("task", "kill", "-s", "SIGKILL", c.id)
			_, _ = s.e.cd.Ctr("task", "rm", "-f", c.id)
			_, _ = s.e.cd.Ctr("container", "rm", c.id)
		}
	}
}

// injectFaults injects one fault after another, with quiet time between,
// until end.
func (s *soak) injectFaults(t *testing.T, end time.Time) {
	t.Helper()
	kinds := []func(*testing.T) soakWindow{s.killFused, s.upgradeFused, s.killServe, s.restartContainerd,
		s.registryFault(testenv.FaultUnavailable), s.registryFault(testenv.FaultStall)}
	for i := 0; ; i++ {
		time.Sleep(soakQuiet)
		if time.Now().After(end) {
			return
		}
		w := kinds[i%len(kinds)](t)
		s.windows = append(s.windows, w)
		t.Logf("fault %s from %s to %s", w.kind, w.start.Format("15:04:05.000"), w.end.Format("15:04:05.000"))
	}
}

func (s *soak) killFused(t *testing.T) soakWindow {
	t.Helper()
	w := soakWindow{kind: "fused SIGKILL", start: time.Now()}
	old := s.e.ls.FusedPID()
	if old == 0 {
		t.Fatal("no fused runs")
	}
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for pid := s.e.ls.FusedPID(); pid == 0 || pid == old; pid = s.e.ls.FusedPID() {
		if time.Now().After(deadline) {
			t.Fatal("serve did not start fused again")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The running containers read on: the new fused resumed their mounts.
	w.end = time.Now()
	return w
}

// buildBinaries builds lazysnap twice, with two version strings; serve
// runs a copy of the first.
func (s *soak) buildBinaries(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	for i := range s.builds {
		s.builds[i] = filepath.Join(dir, fmt.Sprintf("lazysnap-%d", i))
		buildLazysnap(t, s.builds[i], fmt.Sprintf("soak-build-%d", i))
	}
	s.bin = filepath.Join(dir, "lazysnap")
	copyExecutable(t, s.builds[0], s.bin)
}

// upgradeFused upgrades fused as an operator does: the other build is
// renamed over the binary on disk and fused gets SIGTERM; serve starts the
// new binary's fused, which resumes the mounts.
func (s *soak) upgradeFused(t *testing.T) soakWindow {
	t.Helper()
	w := soakWindow{kind: "fused upgrade", start: time.Now()}
	s.upgrades++
	next := s.bin + ".next"
	copyExecutable(t, s.builds[s.upgrades%2], next)
	if err := os.Rename(next, s.bin); err != nil {
		t.Fatal(err)
	}
	old := s.e.ls.FusedPID()
	if old == 0 {
		t.Fatal("no fused runs")
	}
	if err := syscall.Kill(old, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for pid := s.e.ls.FusedPID(); pid == 0 || pid == old; pid = s.e.ls.FusedPID() {
		if time.Now().After(deadline) {
			t.Fatal("serve did not start the upgraded fused")
		}
		time.Sleep(50 * time.Millisecond)
	}
	w.end = time.Now()
	return w
}

func copyExecutable(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

func (s *soak) killServe(t *testing.T) soakWindow {
	t.Helper()
	w := soakWindow{kind: "serve SIGKILL", start: time.Now()}
	s.e.ls.Kill()
	s.e.ls.Restart()
	w.end = time.Now()
	return w
}

func (s *soak) restartContainerd(t *testing.T) soakWindow {
	t.Helper()
	w := soakWindow{kind: "containerd restart", start: time.Now()}
	s.e.cd.Restart()
	w.end = time.Now()
	return w
}

func (s *soak) registryFault(f testenv.Fault) func(*testing.T) soakWindow {
	return func(t *testing.T) soakWindow {
		w := soakWindow{kind: "registry " + f.String(), start: time.Now()}
		s.e.faults.Set(f)
		time.Sleep(soakRegistryFault)
		s.e.faults.Set(testenv.FaultNone)
		w.end = time.Now()
		return w
	}
}

// soakReport is what the soak saw.
type soakReport struct {
	duration          time.Duration
	containers        int
	reads, okReads    int64
	faults            map[string]int
	errors            map[string]int64 // read errors by window
	wrongSums         int64
	wrongBytes        int64
	notStoppedCleanly int
}

func (r soakReport) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "soak: %s, %d containers, %d reads (%d ok), wrong sums %d (%d bytes)\n",
		r.duration.Round(time.Second), r.containers, r.reads, r.okReads, r.wrongSums, r.wrongBytes)
	fmt.Fprintf(&b, "faults injected:%s\n", sortedCounts(r.faults))
	fmt.Fprintf(&b, "read errors by window:%s\n", sortedCounts(r.errors))
	fmt.Fprintf(&b, "containers of the last generation that did not stop cleanly: %d\n", r.notStoppedCleanly)
	return b.String()
}

func sortedCounts[V int | int64](m map[string]V) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%d", k, m[k])
	}
	if len(keys) == 0 {
		b.WriteString(" none")
	}
	return b.String()
}

func (s *soak) analyse(t *testing.T) soakReport {
	t.Helper()
	rep := soakReport{duration: time.Since(s.gens[0]), containers: len(s.containers),
		faults: map[string]int{}, errors: map[string]int64{}}
	for _, w := range s.windows {
		rep.faults[w.kind]++
	}
	last := len(s.gens) - 1
	for _, c := range s.containers {
		s.analyseContainer(t, c, &rep)
		if _, err := os.Stat(filepath.Join(c.out, "done")); c.gen == last && err != nil {
			rep.notStoppedCleanly++
		}
	}
	return rep
}

func (s *soak) analyseContainer(t *testing.T, c *soakContainer, rep *soakReport) {
	t.Helper()
	f, err := os.Open(filepath.Join(c.out, "sums"))
	if os.IsNotExist(err) {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 3 {
			continue // a line cut short by a kill
		}
		epoch, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			continue
		}
		rep.reads++
		if fields[1] == "ERR" {
			rep.errors[s.classify(epoch)]++
			continue
		}
		rep.okReads++
		if want, ok := c.img.Files[fields[2]]; !ok || want != fields[1] {
			rep.wrongSums++
			rep.wrongBytes += soakFileSize(fields[2])
		}
	}
}

// classify names the window a read error at epoch (a whole second, so
// the read happened within the following second) falls in.
func (s *soak) classify(epoch int64) string {
	at := time.Unix(epoch, 0)
	for _, w := range s.windows {
		slack := 2 * time.Second
		if strings.HasPrefix(w.kind, "registry") {
			slack += soakReadTimeout
		}
		if !at.Add(time.Second).Before(w.start) && !at.After(w.end.Add(slack)) {
			return "during " + w.kind
		}
	}
	return "outside fault windows"
}

// soakFileSize is the size of a file buildImages generated, by its
// directory.
func soakFileSize(path string) int64 {
	switch filepath.Base(filepath.Dir(path)) {
	case "big":
		return 256 << 10
	case "text":
		return 1 << 20
	default:
		return 16 << 10
	}
}
