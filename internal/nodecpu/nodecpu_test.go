package nodecpu

import (
	"context"
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"
)

// TestFreeCores: free cores are every core less what other processes ran;
// this process's own time counts as free, and the result stays within
// [0, cores].
func TestFreeCores(t *testing.T) {
	t.Parallel()
	prev := sample{cores: 4, total: 100, busy: 10, self: 1}
	cases := []struct {
		name string
		now  sample
		want float64
	}{
		{"idle", sample{cores: 4, total: 104, busy: 10, self: 1}, 4},
		{"others one core", sample{cores: 4, total: 104, busy: 11, self: 1}, 3},
		{"only this process busy", sample{cores: 4, total: 104, busy: 12, self: 3}, 4},
		{"others and this process", sample{cores: 4, total: 104, busy: 13, self: 2}, 2},
		{"no time passed", sample{cores: 4, total: 100, busy: 10, self: 1}, 4},
		{"self counted more than busy", sample{cores: 4, total: 104, busy: 10, self: 2}, 4},
	}
	for _, c := range cases {
		if got := freeCores(prev, c.now); got != c.want {
			t.Errorf("%s: freeCores = %v, want %v", c.name, got, c.want)
		}
	}
}

// TestSamplerSeesAnotherProcess: a child process spinning on a core takes
// about a core from what the Sampler reports free; the figure is cached
// within the interval.
func TestSamplerSeesAnotherProcess(t *testing.T) {
	if os.Getenv("NODECPU_SPIN") == "1" {
		for {
		}
	}
	s, err := New(50 * time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	cores := float64(runtime.NumCPU())
	ctx, cancel := context.WithCancel(context.Background())
	spin := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestSamplerSeesAnotherProcess$")
	spin.Env = append(os.Environ(), "NODECPU_SPIN=1")
	if err := spin.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cancel()
		_ = spin.Wait() // killed by cancel
	}()
	time.Sleep(100 * time.Millisecond)
	s.FreeCores() // start a window while the child spins
	time.Sleep(400 * time.Millisecond)
	free := s.FreeCores()
	if free < 0 || free > cores-0.5 {
		t.Fatalf("free cores while another process spins: %.2f of %.0f, want at most %.1f", free, cores, cores-0.5)
	}
	if again := s.FreeCores(); again != free {
		t.Fatalf("second figure within the interval: %.2f, want the cached %.2f", again, free)
	}
}
