package record

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/internal/testenv"
)

func TestRunRecordsOpenOrderUntilReady(t *testing.T) {
	img := scriptImage(t, `cat /data/c /data/a >/dev/null
echo hello >/tmp/written
cat /tmp/written /data/b >/dev/null
echo READY
sleep 1000
`)
	res, out := record(t, img, WithWaitLine("READY"), WithTimeout(5*time.Minute))
	if res.Reason != StopReady || res.Problem() != nil {
		t.Fatalf("stopped by %q (%v), want ready; output:\n%s", res.Reason, res.Problem(), out)
	}
	// execve opens the script, then its interpreter; busybox's sh reads the
	// script and runs cat. /tmp/written is the workload's, not the image's;
	// symlinks (/bin/sh, /bin/cat) resolve to the file opened.
	want := []string{"/app/start.sh", "/bin/busybox", "/data/c", "/data/a", "/data/b"}
	if !slices.Equal(res.Trace.Paths, want) {
		t.Errorf("trace %q, want %q", res.Trace.Paths, want)
	}
}

func TestRunFailingWorkloadKeepsPartialTrace(t *testing.T) {
	img := scriptImage(t, "cat /data/a >/dev/null\nexit 3\n")
	res, _ := record(t, img, WithWaitLine("READY"))
	if res.Reason != StopExit || res.ExitCode != 3 {
		t.Fatalf("got %q exit %d, want exit 3", res.Reason, res.ExitCode)
	}
	if res.Problem() == nil {
		t.Error("no problem reported for a failing workload")
	}
	if indexOf(res.Trace.Paths, "/data/a") < 0 {
		t.Errorf("partial trace lacks /data/a: %q", res.Trace.Paths)
	}
}

func TestRunNeverReadyTimesOutWithTraceSoFar(t *testing.T) {
	img := scriptImage(t, "cat /data/b >/dev/null\nsleep 1000\n")
	res, _ := record(t, img, WithWaitLine("READY"), WithTimeout(2*time.Second))
	if res.Reason != StopTimeout || res.Problem() == nil {
		t.Fatalf("got %q (%v), want a timeout problem", res.Reason, res.Problem())
	}
	if indexOf(res.Trace.Paths, "/data/b") < 0 {
		t.Errorf("trace lacks /data/b: %q", res.Trace.Paths)
	}
}

func TestRunCommandOverride(t *testing.T) {
	img := scriptImage(t, "cat /data/a\n")
	res, _ := record(t, img, WithCommand("/bin/cat", "/data/c"))
	if res.Reason != StopExit || res.ExitCode != 0 || res.Problem() != nil {
		t.Fatalf("got %q exit %d (%v)", res.Reason, res.ExitCode, res.Problem())
	}
	if indexOf(res.Trace.Paths, "/data/c") < 0 || indexOf(res.Trace.Paths, "/data/a") >= 0 || indexOf(res.Trace.Paths, "/app/start.sh") >= 0 {
		t.Errorf("override not run alone: %q", res.Trace.Paths)
	}
}

// interfaces returns the interface names of a /proc/net/dev listing.
func interfaces(dev string) []string {
	var names []string
	for _, line := range strings.Split(dev, "\n") {
		if name, _, ok := strings.Cut(line, ":"); ok && !strings.Contains(name, "|") {
			names = append(names, strings.TrimSpace(name))
		}
	}
	slices.Sort(names)
	return names
}

func TestRunNetwork(t *testing.T) {
	img := scriptImage(t, "cat /proc/net/dev\n")
	host, err := os.ReadFile("/proc/net/dev")
	if err != nil {
		t.Fatal(err)
	}
	t.Run("off", func(t *testing.T) {
		_, out := record(t, img)
		if got := interfaces(out); !slices.Equal(got, []string{"lo"}) {
			t.Errorf("workload sees interfaces %q, want only lo", got)
		}
	})
	t.Run("on", func(t *testing.T) {
		_, out := record(t, img, WithNetwork(true))
		if got, want := interfaces(out), interfaces(string(host)); !slices.Equal(got, want) {
			t.Errorf("workload sees interfaces %q, want the host's %q", got, want)
		}
	})
}

// cancelWriter cancels a context when the workload prints text.
type cancelWriter struct {
	text   string
	cancel context.CancelFunc
}

func (w cancelWriter) Write(p []byte) (int, error) {
	if strings.Contains(string(p), w.text) {
		w.cancel()
	}
	return len(p), nil
}

func TestRunCanceledCleansUp(t *testing.T) {
	testenv.RequireRoot(t)
	img := scriptImage(t, "echo STARTED\nsleep 1000\n")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	work := t.TempDir()
	_, err := Run(ctx, img, WithRuntime(testenv.Tool(t, "runc")), WithWorkDir(work),
		WithOutput(cancelWriter{text: "STARTED", cancel: cancel}), WithTimeout(5*time.Minute))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run returned %v, want context.Canceled", err)
	}
	if left, _ := os.ReadDir(work); len(left) != 0 {
		t.Errorf("work dir not cleaned up: %v", left)
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mounts), work) {
		t.Errorf("mounts left under %s", work)
	}
}
