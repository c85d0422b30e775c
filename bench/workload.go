package bench

import (
	"fmt"
	"testing"

	"github.com/lazysnap/lazysnap/internal/testenv"
)

// Workload is an image with the command a container runs and the signal
// that says it is ready.
type Workload struct {
	// Name names the workload in tables, charts and case names.
	Name string
	// Cmd is the container's command (argv).
	Cmd []string
	// Ready says when the workload is ready.
	Ready ReadySignal
	// RecordLine ends the recording of `lazyconv optimize` (its
	// --wait-line). The default is Ready.Line; without either, recording
	// runs until optimize's timeout.
	RecordLine string
	// Build pushes the source image (gzip layers) to reg and returns it.
	// It runs once per benchmark run, with the link unshaped.
	Build func(tb testing.TB, reg *testenv.Registry) *testenv.Image
}

// ReadySignal is either a line on the container's stdout or a probe
// command, run in the container until it succeeds.
type ReadySignal struct {
	// Line is ready when a stdout line contains it.
	Line string
	// Probe is a command (argv) exec'd in the running container; ready
	// when it exits 0.
	Probe []string
}

func (r ReadySignal) validate() error {
	if (r.Line == "") == (len(r.Probe) == 0) {
		return fmt.Errorf("a ready signal needs exactly one of a line or a probe")
	}
	return nil
}

// String describes the signal for the report.
func (r ReadySignal) String() string {
	if r.Line != "" {
		return fmt.Sprintf("stdout line %q", r.Line)
	}
	return fmt.Sprintf("probe %q succeeds", r.Probe)
}

func (w Workload) recordLine() string {
	if w.RecordLine != "" {
		return w.RecordLine
	}
	return w.Ready.Line
}
