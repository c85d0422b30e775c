package testenv

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/containerd/errdefs"
)

// WithCritest readies a CRI containerd (see WithCRI) for critest: the
// public registries critest pulls from (CritestRegistries) resolve to reg
// through hosts.toml, and pods get a network from a private CNI bridge with
// the reference plugins from the tools dir. It uses the config filter slot
// (WithConfigFilter) to lay these files down before the daemon starts.
func WithCritest(reg *Registry) ContainerdOption {
	return WithConfigFilter(func(c *Containerd, cfg []byte) ([]byte, error) {
		for _, host := range CritestRegistries() {
			if err := writeMirrorFile(c.HostsDir, host, reg.Host); err != nil {
				return nil, err
			}
		}
		if err := writeCNIConfig(c); err != nil {
			return nil, err
		}
		return enableNRI(c, cfg)
	})
}

// enableNRI turns on containerd's NRI plugin (disabled in test daemons) with
// a private socket, so critest's NRI specs run (RunCritest passes the
// socket): they create and stop containers on the snapshotter too.
func enableNRI(c *Containerd, cfg []byte) ([]byte, error) {
	const disabled = `"io.containerd.nri.v1.nri", `
	if !bytes.Contains(cfg, []byte(disabled)) {
		return nil, fmt.Errorf("the config does not disable NRI as expected: %w", errdefs.ErrFailedPrecondition)
	}
	cfg = bytes.Replace(cfg, []byte(disabled), nil, 1)
	nri := fmt.Sprintf("\n[plugins.'io.containerd.nri.v1.nri']\n  disable = false\n  socket_path = %q\n"+
		"  plugin_path = %q\n  plugin_config_path = %q\n", c.nriSocket(),
		filepath.Join(c.configDir, "nri-plugins"), filepath.Join(c.configDir, "nri-conf"))
	return append(cfg, nri...), nil
}

func (c *Containerd) nriSocket() string { return filepath.Join(c.runDir, "nri.sock") }

// writeMirrorFile sends every pull of registry to the plain-HTTP host
// (HOST:PORT) instead: no request leaves the machine.
func writeMirrorFile(hostsDir, registry, host string) error {
	dir := filepath.Join(hostsDir, registry)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating hosts dir for %s: %w", registry, err)
	}
	toml := fmt.Sprintf("server = \"http://%s\"\n\n[host.\"http://%s\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
		host, host)
	if err := os.WriteFile(filepath.Join(dir, "hosts.toml"), []byte(toml), 0o644); err != nil {
		return fmt.Errorf("writing hosts.toml for %s: %w", registry, err)
	}
	return nil
}

// writeCNIConfig gives this daemon its own bridge and /24, so two critest
// daemons (or other tests) never share addresses, and removes the bridge
// when the test ends. containerd adds the loopback plugin itself.
func writeCNIConfig(c *Containerd) error {
	cniDir := filepath.Join(ToolsDir(), "cni")
	for _, plugin := range []string{"bridge", "host-local", "loopback", "portmap"} {
		src := filepath.Join(cniDir, plugin)
		if _, err := os.Stat(src); err != nil {
			return fmt.Errorf("CNI plugin %s (run make deps): %w", plugin, err)
		}
		if err := os.Symlink(src, filepath.Join(c.configDir, "cni-bin", plugin)); err != nil {
			return fmt.Errorf("linking CNI plugin %s: %w", plugin, err)
		}
	}
	var b [2]byte
	_, _ = rand.Read(b[:])
	id := binary.BigEndian.Uint16(b[:])
	bridge := fmt.Sprintf("lzcri%04x", id)
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       "critest-" + bridge,
		"plugins": []any{
			map[string]any{"type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": false, "hairpinMode": true,
				"ipam": map[string]any{"type": "host-local", "dataDir": filepath.Join(c.configDir, "cni-ipam"),
					"ranges": []any{[]any{map[string]any{"subnet": fmt.Sprintf("10.214.%d.0/24", id%256)}}},
					"routes": []any{map[string]any{"dst": "0.0.0.0/0"}}}},
			map[string]any{"type": "portmap", "capabilities": map[string]any{"portMappings": true}},
		},
	}
	data, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding CNI config: %w", err)
	}
	if err := os.WriteFile(filepath.Join(c.configDir, "cni-conf", "10-critest.conflist"), data, 0o644); err != nil {
		return fmt.Errorf("writing CNI config: %w", err)
	}
	c.t.Cleanup(func() { _ = exec.Command("ip", "link", "del", bridge).Run() })
	return nil
}

// CritestSpec is the outcome of one critest spec.
type CritestSpec struct {
	// Name is the spec's full text: its containers' and its own, joined by
	// spaces, the text -ginkgo.focus and -ginkgo.skip match.
	Name string
	// State is Ginkgo's: passed, failed, skipped, pending, panicked,
	// interrupted, aborted or timedout.
	State string
	// Failure is the failure message and location, if any.
	Failure string
	// RunTime is how long the spec ran.
	RunTime time.Duration
	// Attempts is how many times it ran: above 1, it failed first (see
	// RunCritest) and State is that of the last attempt.
	Attempts int
}

// CritestReport is the result of one critest run.
type CritestReport struct {
	Specs []CritestSpec
	// Duration is the wall time of the whole run.
	Duration time.Duration
	// Output is critest's combined output.
	Output string
}

// Count returns how many specs ended in each state.
func (r *CritestReport) Count() map[string]int {
	out := map[string]int{}
	for _, s := range r.Specs {
		out[s.State]++
	}
	return out
}

// Summary is "N passed, N failed, N skipped" (plus any other state).
func (r *CritestReport) Summary() string {
	counts := r.Count()
	parts := []string{fmt.Sprintf("%d passed", counts["passed"]), fmt.Sprintf("%d failed", counts["failed"]),
		fmt.Sprintf("%d skipped", counts["skipped"])}
	var other []string
	for state, n := range counts {
		if state != "passed" && state != "failed" && state != "skipped" {
			other = append(other, fmt.Sprintf("%d %s", n, state))
		}
	}
	sort.Strings(other)
	return strings.Join(append(parts, other...), ", ")
}

// Flaky returns the specs that failed and then passed on a later attempt.
func (r *CritestReport) Flaky() []CritestSpec {
	var out []CritestSpec
	for _, s := range r.Specs {
		if s.State == "passed" && s.Attempts > 1 {
			out = append(out, s)
		}
	}
	return out
}

// States maps each spec's name to its state.
func (r *CritestReport) States() map[string]string {
	out := make(map[string]string, len(r.Specs))
	for _, s := range r.Specs {
		out[s.Name] = s.State
	}
	return out
}

// critestAttempts is how many times a failing spec runs. Some critest specs
// race the runtime by design (removing a container that is still exiting, a
// failed sandbox's asynchronous cleanup) and fail now and then under load on
// any snapshotter; a spec that fails every attempt is a real failure.
const critestAttempts = 3

// RunCritest runs the critest binary from the tools dir against the
// daemon's CRI endpoint, with the specs selected by focus and skip (Ginkgo
// regular expressions; empty selects everything), one spec at a time, a
// failing spec up to critestAttempts times, and returns each spec's outcome
// from Ginkgo's JSON report. Failed specs are not an error: the caller
// judges the report.
func (c *Containerd) RunCritest(focus, skip string) (*CritestReport, error) {
	dir, err := os.MkdirTemp("", "critest-")
	if err != nil {
		return nil, fmt.Errorf("creating critest dir: %w", err)
	}
	defer os.RemoveAll(dir)
	reportPath := filepath.Join(dir, "report.json")
	ep := "unix://" + c.Address
	args := []string{"-runtime-endpoint", ep, "-image-endpoint", ep,
		"-ginkgo.json-report=" + reportPath, "-ginkgo.no-color", "-ginkgo.timeout=60m",
		fmt.Sprintf("-ginkgo.flake-attempts=%d", critestAttempts)}
	if _, err := os.Stat(c.nriSocket()); err == nil {
		args = append(args, "-nri-socket", c.nriSocket())
	}
	if focus != "" {
		args = append(args, "-ginkgo.focus="+focus)
	}
	if skip != "" {
		args = append(args, "-ginkgo.skip="+skip)
	}
	cmd := exec.Command(Tool(c.t, "critest"), args...)
	// critest writes temporary files and reads ./crictl.yaml from its
	// working directory: keep it private.
	cmd.Dir = dir
	start := time.Now()
	out, runErr := cmd.CombinedOutput()
	report := &CritestReport{Duration: time.Since(start), Output: string(out)}
	specs, err := readGinkgoReport(reportPath)
	if err != nil {
		return report, fmt.Errorf("critest: %w (run: %w)\n%s", err, runErr, tail(out, 4000))
	}
	report.Specs = specs
	return report, nil
}

// ginkgoReport is the part of Ginkgo v2's JSON report (types.Report) read here.
type ginkgoReport struct {
	SpecReports []struct {
		ContainerHierarchyTexts []string
		LeafNodeText            string
		LeafNodeType            string
		State                   string
		RunTime                 time.Duration
		NumAttempts             int
		Failure                 struct {
			Message  string
			Location struct {
				FileName   string
				LineNumber int
			}
		}
	}
}

func readGinkgoReport(path string) ([]CritestSpec, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading Ginkgo report: %w", err)
	}
	var reports []ginkgoReport
	if err := json.Unmarshal(data, &reports); err != nil {
		return nil, fmt.Errorf("decoding Ginkgo report: %w", err)
	}
	var specs []CritestSpec
	for _, r := range reports {
		for _, s := range r.SpecReports {
			// Suite nodes (BeforeSuite...) are not specs.
			if s.LeafNodeType != "It" {
				continue
			}
			spec := CritestSpec{Name: strings.Join(append(s.ContainerHierarchyTexts, s.LeafNodeText), " "),
				State: s.State, RunTime: s.RunTime, Attempts: s.NumAttempts}
			if s.Failure.Message != "" {
				spec.Failure = fmt.Sprintf("%s:%d: %s", filepath.Base(s.Failure.Location.FileName),
					s.Failure.Location.LineNumber, s.Failure.Message)
			}
			specs = append(specs, spec)
		}
	}
	if len(specs) == 0 {
		return nil, errors.New("the Ginkgo report lists no specs")
	}
	return specs, nil
}
