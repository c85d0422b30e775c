package bench

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/lazysnap/lazysnap/internal/testenv"
)

// Report is a run's configuration, every result, and a summary per
// workload and mode; it is what results.json holds.
type Report struct {
	Config    Config    `json:"config"`
	Results   []Result  `json:"results"`
	Summaries []Summary `json:"summaries"`
	// Floors are the physical floors per workload, when the run had the
	// local mode and a lazy one.
	Floors []Floor `json:"floors,omitempty"`
}

// Floor is the least time to ready any lazy snapshotter could reach on
// this link: the cold local start, plus the compressed bytes the workload
// needs before ready at the link rate, plus 3 round trips (manifest,
// config, one fetch). The bytes needed are taken as the fewest any lazy
// mode of the run fetched before ready (median over repetitions): no mode
// can start the workload with less than it reads.
type Floor struct {
	Workload     string  `json:"workload"`
	LocalSeconds float64 `json:"local_seconds"`
	MBNeeded     float64 `json:"mb_needed"`
	NeededBy     Mode    `json:"mb_needed_by"`
	Seconds      float64 `json:"seconds"`
}

// Config is what was measured, and how.
type Config struct {
	Started            time.Time      `json:"started"`
	RateMbit           float64        `json:"rate_mbit"`
	DelayMS            float64        `json:"delay_ms"`
	Reps               int            `json:"reps"`
	Modes              []Mode         `json:"modes"`
	Workloads          []WorkloadInfo `json:"workloads"`
	SettleQuietSeconds float64        `json:"settle_quiet_seconds"`
	SettleCapSeconds   float64        `json:"settle_cap_seconds"`
	// FreshDisks says whether each case had a file system of its own.
	FreshDisks bool `json:"fresh_disks"`
	// Binaries maps lazysnap and lazyconv to the sha256 of the binary run,
	// since results change with the build.
	Binaries map[string]string `json:"binaries"`
}

// WorkloadInfo describes a workload in the report.
type WorkloadInfo struct {
	Name  string   `json:"name"`
	Cmd   []string `json:"cmd"`
	Ready string   `json:"ready"`
	// CompressedBytes is the size of the source (gzip) image's layers.
	CompressedBytes int64 `json:"compressed_bytes"`
}

// Spread is the median and range of a measure over repetitions.
type Spread struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
}

// Summary aggregates the repetitions of one workload in one mode.
type Summary struct {
	Workload        string `json:"workload"`
	Mode            Mode   `json:"mode"`
	N               int    `json:"n"`
	Ready           Spread `json:"ready_seconds"`
	Pull            Spread `json:"pull_seconds"`
	Create          Spread `json:"create_seconds"`
	Run             Spread `json:"run_seconds"`
	MBAtReady       Spread `json:"mb_at_ready"`
	RequestsAtReady Spread `json:"requests_at_ready"`
	MBTotal         Spread `json:"mb_total"`
	RequestsTotal   Spread `json:"requests_total"`
	// Speedup is the overlayfs median time to ready over this one's (0
	// without an overlayfs case).
	Speedup float64 `json:"speedup_vs_overlayfs"`
	// Settled is false if any repetition's totals hit the settle cap.
	Settled bool `json:"totals_settled"`
}

func newReport(o options, sizes map[string]int64, started time.Time) *Report {
	c := Config{Started: started, RateMbit: float64(o.rateBits) / 1e6, DelayMS: float64(o.delay) / 1e6,
		Reps: o.reps, Modes: o.modes, SettleQuietSeconds: o.settleQuiet.Seconds(), SettleCapSeconds: o.settleCap.Seconds(), FreshDisks: o.freshDisks,
		Binaries: map[string]string{}}
	for name, path := range map[string]string{"lazysnap": testenv.LazysnapBin(), "lazyconv": testenv.LazyconvBin()} {
		if sum, err := fileSHA256(path); err == nil {
			c.Binaries[name] = sum
		}
	}
	for _, w := range o.workloads {
		c.Workloads = append(c.Workloads, WorkloadInfo{Name: w.Name, Cmd: w.Cmd, Ready: w.Ready.String(),
			CompressedBytes: sizes[w.Name]})
	}
	return &Report{Config: c}
}

func (r *Report) add(res Result) { r.Results = append(r.Results, res) }

// summarize fills Summaries, in workload then mode order.
func (r *Report) summarize() {
	r.Summaries = nil
	for _, w := range r.Config.Workloads {
		for _, m := range r.Config.Modes {
			if s, ok := r.summary(w.Name, m); ok {
				r.Summaries = append(r.Summaries, s)
			}
		}
	}
	for i := range r.Summaries {
		if base, ok := r.find(r.Summaries[i].Workload, Overlayfs); ok && r.Summaries[i].Ready.Median > 0 {
			r.Summaries[i].Speedup = base.Ready.Median / r.Summaries[i].Ready.Median
		}
	}
	r.Floors = nil
	for _, w := range r.Config.Workloads {
		if f, ok := r.floor(w.Name); ok {
			r.Floors = append(r.Floors, f)
		}
	}
}

// floor computes a workload's Floor from the summaries.
func (r *Report) floor(workload string) (Floor, bool) {
	local, ok := r.find(workload, Local)
	if !ok {
		return Floor{}, false
	}
	f := Floor{Workload: workload, LocalSeconds: local.Ready.Median, MBNeeded: -1}
	for _, s := range r.Summaries {
		if s.Workload == workload && s.Mode.lazy() && (f.MBNeeded < 0 || s.MBAtReady.Median < f.MBNeeded) {
			f.MBNeeded, f.NeededBy = s.MBAtReady.Median, s.Mode
		}
	}
	if f.MBNeeded < 0 || r.Config.RateMbit <= 0 {
		return Floor{}, false
	}
	f.Seconds = f.LocalSeconds + f.MBNeeded*8/r.Config.RateMbit + 3*r.Config.DelayMS/1000
	return f, true
}

func (r *Report) summary(workload string, m Mode) (Summary, bool) {
	var rs []Result
	for _, res := range r.Results {
		if res.Workload == workload && res.Mode == m {
			rs = append(rs, res)
		}
	}
	if len(rs) == 0 {
		return Summary{}, false
	}
	s := Summary{Workload: workload, Mode: m, N: len(rs), Settled: true,
		Ready:           spread(rs, func(x Result) float64 { return x.ReadySeconds }),
		Pull:            spread(rs, func(x Result) float64 { return x.PullSeconds }),
		Create:          spread(rs, func(x Result) float64 { return x.CreateSeconds }),
		Run:             spread(rs, func(x Result) float64 { return x.RunSeconds }),
		MBAtReady:       spread(rs, func(x Result) float64 { return float64(x.BytesAtReady) / 1e6 }),
		RequestsAtReady: spread(rs, func(x Result) float64 { return float64(x.RequestsAtReady) }),
		MBTotal:         spread(rs, func(x Result) float64 { return float64(x.BytesTotal) / 1e6 }),
		RequestsTotal:   spread(rs, func(x Result) float64 { return float64(x.RequestsTotal) }),
	}
	for _, x := range rs {
		s.Settled = s.Settled && x.TotalSettled
	}
	return s, true
}

// find returns the summary of workload in mode m.
func (r *Report) find(workload string, m Mode) (Summary, bool) {
	for _, s := range r.Summaries {
		if s.Workload == workload && s.Mode == m {
			return s, true
		}
	}
	return Summary{}, false
}

// spread is the median (the mean of the middle two for an even count),
// minimum and maximum of f over rs.
func spread(rs []Result, f func(Result) float64) Spread {
	v := make([]float64, len(rs))
	for i, x := range rs {
		v[i] = f(x)
	}
	slices.Sort(v)
	n := len(v)
	med := v[n/2]
	if n%2 == 0 {
		med = (v[n/2-1] + v[n/2]) / 2
	}
	return Spread{Median: med, Min: v[0], Max: v[n-1]}
}

// WriteFiles writes results.json and chart.png into dir, creating it.
func (r *Report) WriteFiles(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating output folder: %w", err)
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding results: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing results: %w", err)
	}
	return r.WriteChart(filepath.Join(dir, "chart.png"))
}
