package bench

import (
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/internal/testenv"
)

// benchFlags are BenchmarkStartup's flags, given after -args (`make bench
// BENCH_ARGS="..."`). Flags of a test binary are read here only.
type benchFlags struct {
	rateMbit   int64
	delay      time.Duration
	reps       int
	images     string
	full       bool
	modes      string
	out        string
	socket     string
	baseline   string
	baseConfig string
	image      string
	cmd        string
	readyLine  string
	readyProbe string
	freshDisk  bool
	requestLog bool
	logs       string
}

func registerFlags(fs *flag.FlagSet) *benchFlags {
	f := &benchFlags{}
	fs.Int64Var(&f.rateMbit, "rate", 200, "registry link rate in Mbit/s")
	fs.BoolVar(&f.freshDisk, "fresh-disk", true, "give each case a freshly made file system (an ext4 image, loop-mounted)")
	fs.BoolVar(&f.requestLog, "request-log", false, "list each case's blob GETs, with times and sizes, in results.json")
	fs.DurationVar(&f.delay, "delay", 20*time.Millisecond, "delay added to each registry request")
	fs.IntVar(&f.reps, "reps", 3, "repetitions of each case")
	fs.StringVar(&f.images, "images", "python", "comma-separated images of the default set (python, gcc, redis, scipy, jvm, node) or held out (postgres)")
	fs.BoolVar(&f.full, "full", false, "run every image of the default set")
	fs.StringVar(&f.modes, "modes", "", "comma-separated modes (default: overlayfs and the four lazysnap modes; also stargz, stargz-optimized, soci, external, lazysnap-baseline)")
	fs.StringVar(&f.logs, "logs", "", "keep each lazysnap case's serve and fused logs, at log level debug, in this folder")
	fs.StringVar(&f.out, "out", "", "output folder (default bench-results/TIMESTAMP in the repository)")
	fs.StringVar(&f.socket, "snapshotter-socket", "", "another proxy snapshotter's socket, for side-by-side runs")
	fs.StringVar(&f.baseline, "baseline-lazysnap", "", "another lazysnap binary, run as mode lazysnap-baseline beside this build")
	fs.StringVar(&f.baseConfig, "baseline-config", "", "TOML appended to the baseline's lazysnap config (\\n for newlines)")
	fs.StringVar(&f.image, "image", "", "benchmark this image instead (registry reference or oci:DIR)")
	fs.StringVar(&f.cmd, "cmd", "", "the image's command: a JSON array, or a shell command")
	fs.StringVar(&f.readyLine, "ready", "", "ready when a stdout line contains this text")
	fs.StringVar(&f.readyProbe, "ready-probe", "", "ready when this shell command, run in the container, succeeds")
	return f
}

// flags is set by TestMain before any test or benchmark runs.
var flags *benchFlags

func TestMain(m *testing.M) {
	flags = registerFlags(flag.CommandLine)
	flag.Parse()
	os.Exit(m.Run())
}

// options turns the flags into suite options.
func (f *benchFlags) options() ([]Option, error) {
	ws, err := f.workloads()
	if err != nil {
		return nil, err
	}
	opts := []Option{WithRate(f.rateMbit * 1_000_000), WithDelay(f.delay), WithReps(f.reps), WithWorkloads(ws...),
		WithExternalSnapshotter(f.socket), WithBaselineLazysnap(f.baseline), WithFreshDisks(f.freshDisk), WithRequestLog(f.requestLog), WithLogDir(f.logs),
		WithBaselineConfig(strings.ReplaceAll(f.baseConfig, `\n`, "\n")),
		WithLogger(slog.New(slog.NewTextHandler(os.Stderr, nil)))}
	if f.modes != "" {
		modes, err := ParseModes(f.modes)
		if err != nil {
			return nil, err
		}
		opts = append(opts, WithModes(modes...))
	}
	return opts, nil
}

func (f *benchFlags) outDir() string {
	if f.out != "" {
		return f.out
	}
	return filepath.Join(testenv.RepoRoot(), "bench-results", time.Now().Format("20060102-150405"))
}

func (f *benchFlags) workloads() ([]Workload, error) {
	if f.image != "" {
		return f.userWorkload()
	}
	all := DefaultWorkloads()
	if f.full {
		return all, nil
	}
	var ws []Workload
	for _, n := range strings.Split(f.images, ",") {
		w, ok := findWorkload(append(all, HeldOutWorkloads()...), strings.TrimSpace(n))
		if !ok {
			return nil, fmt.Errorf("-images: no image %q in the default or held-out set", n)
		}
		ws = append(ws, w)
	}
	return ws, nil
}

func findWorkload(ws []Workload, name string) (Workload, bool) {
	for _, w := range ws {
		if w.Name == name {
			return w, true
		}
	}
	return Workload{}, false
}

func (f *benchFlags) userWorkload() ([]Workload, error) {
	if f.cmd == "" {
		return nil, fmt.Errorf("-image needs -cmd")
	}
	argv := []string{"/bin/sh", "-c", f.cmd}
	if strings.HasPrefix(strings.TrimSpace(f.cmd), "[") {
		if err := json.Unmarshal([]byte(f.cmd), &argv); err != nil {
			return nil, fmt.Errorf("-cmd: not a JSON array of strings: %w", err)
		}
	}
	ready := ReadySignal{Line: f.readyLine}
	if f.readyProbe != "" {
		ready.Probe = []string{"/bin/sh", "-c", f.readyProbe}
	}
	return []Workload{UserWorkload("user", f.image, argv, ready)}, nil
}
