package testenv

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Crictl runs crictl against the daemon's CRI endpoint (started WithCRI) and
// returns its standard output.
func (c *Containerd) Crictl(args ...string) (string, error) {
	ep := "unix://" + c.Address
	full := append([]string{"--runtime-endpoint", ep, "--image-endpoint", ep, "--timeout", "5m"}, args...)
	return runCaptured(exec.Command(Tool(c.t, "crictl"), full...), "crictl", args)
}

// MustCrictl runs crictl and fails the test if it fails.
func (c *Containerd) MustCrictl(t testing.TB, args ...string) string {
	t.Helper()
	out, err := c.Crictl(args...)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// RunPodContainer runs cmd from image in a new host-network pod (no CNI
// needed) through CRI, waits for it to exit and returns its output, taken
// from the CRI log file. The image must have been pulled (crictl pull).
func (c *Containerd) RunPodContainer(t testing.TB, name, image string, cmd []string) string {
	t.Helper()
	dir := t.TempDir()
	podCfg := writeJSON(t, dir, "pod.json", podConfig(name, dir))
	ctrCfg := writeJSON(t, dir, "container.json", containerConfig(name, image, cmd))
	pod := c.MustCrictl(t, "runp", podCfg)
	t.Cleanup(func() {
		_, _ = c.Crictl("stopp", pod)
		_, _ = c.Crictl("rmp", "-f", pod)
	})
	id := c.MustCrictl(t, "create", pod, ctrCfg, podCfg)
	c.MustCrictl(t, "start", id)
	c.waitExited(t, id)
	logData, err := os.ReadFile(filepath.Join(dir, name+".log"))
	if err != nil {
		t.Fatalf("reading container log: %v", err)
	}
	return parseCRILog(logData)
}

// Host network: namespace mode 2 is NODE in the CRI API.
func podConfig(name, logDir string) map[string]any {
	return map[string]any{
		"metadata":      map[string]any{"name": name, "namespace": "default", "uid": "uid-" + name},
		"log_directory": logDir,
		"linux": map[string]any{"security_context": map[string]any{
			"namespace_options": map[string]any{"network": 2},
		}},
	}
}

func containerConfig(name, image string, cmd []string) map[string]any {
	return map[string]any{
		"metadata": map[string]any{"name": name},
		"image":    map[string]any{"image": image},
		"command":  cmd,
		"log_path": name + ".log",
		"linux":    map[string]any{},
	}
}

func writeJSON(t testing.TB, dir, name string, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// waitExited polls `crictl inspect` until the container has exited.
func (c *Containerd) waitExited(t testing.TB, id string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	for {
		out := c.MustCrictl(t, "inspect", "-o", "json", id)
		var st struct {
			Status struct {
				State    string `json:"state"`
				ExitCode int    `json:"exitCode"`
			} `json:"status"`
		}
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("decoding crictl inspect: %v", err)
		}
		if st.Status.State == "CONTAINER_EXITED" {
			if st.Status.ExitCode != 0 {
				t.Errorf("container %s exited with %d", id, st.Status.ExitCode)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s still %s after 5m", id, st.Status.State)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// parseCRILog turns CRI log lines ("TIME STREAM TAG CONTENT", tag F for a
// full line, P for a partial one) back into the container's stdout.
func parseCRILog(data []byte) string {
	var b strings.Builder
	for _, line := range strings.Split(string(data), "\n") {
		parts := strings.SplitN(line, " ", 4)
		if len(parts) < 4 || parts[1] != "stdout" {
			continue
		}
		b.WriteString(parts[3])
		if parts[2] == "F" {
			b.WriteString("\n")
		}
	}
	return b.String()
}
