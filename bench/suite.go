package bench

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"
)

// CaseRunner runs one case, f, as a subtest or sub-benchmark named name (so
// that the case's cold node is torn down when it ends) and reports whether
// it passed. f returns the case's result, for a benchmark to report as
// metrics.
type CaseRunner func(name string, f func(tb testing.TB) Result) bool

// Suite is one benchmark run: set-up, the interleaved cases, the report.
type Suite struct {
	opts      options
	footprint *Footprint
}

// New returns a suite with opts applied over the defaults.
func New(opts ...Option) (*Suite, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if o.externalSocket != "" && !slices.Contains(o.modes, External) {
		o.modes = append(o.modes, External)
	}
	if o.baselineBin != "" && !slices.Contains(o.modes, Baseline) {
		o.modes = append(o.modes, Baseline)
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	return &Suite{opts: o, footprint: &Footprint{}}, nil
}

func (o options) validate() error {
	if o.reps < 1 || len(o.workloads) == 0 || len(o.modes) == 0 {
		return fmt.Errorf("need at least one repetition, workload and mode")
	}
	if slices.Contains(o.modes, External) && o.externalSocket == "" {
		return fmt.Errorf("mode %s needs a snapshotter socket", External)
	}
	if slices.Contains(o.modes, Baseline) && o.baselineBin == "" {
		return fmt.Errorf("mode %s needs a baseline lazysnap binary", Baseline)
	}
	for _, w := range o.workloads {
		if err := w.Ready.validate(); err != nil {
			return fmt.Errorf("workload %s: %w", w.Name, err)
		}
	}
	return nil
}

// Footprint is what the run created, for checking teardown.
func (s *Suite) Footprint() *Footprint { return s.footprint }

// Run sets up under tb (torn down by tb's cleanup), runs every case with
// run, and returns the report of the cases that passed. Cases are interleaved: each repetition runs
// every workload in every mode, the mode order rotated per repetition, so
// that drift of the machine hits all modes alike. Cancelling ctx (Ctrl-C)
// fails the running case and skips the rest; cleanups still run.
func (s *Suite) Run(ctx context.Context, tb testing.TB, run CaseRunner) *Report {
	tb.Helper()
	o := s.opts
	e := startEnv(tb, o, s.footprint)
	refs, sizes := e.prepare(ctx, tb)
	rep := newReport(o, sizes, time.Now())
	total := o.reps * len(o.workloads) * len(o.modes)
	for i, c := range s.cases(refs) {
		if ctx.Err() != nil {
			tb.Fatalf("interrupted: %v", ctx.Err())
		}
		ok := run(c.name(), func(tb testing.TB) Result {
			e.logger.Info("case start", "case", fmt.Sprintf("%d/%d", i+1, total), "name", c.name())
			r, err := e.measure(ctx, tb, c)
			if err != nil {
				tb.Fatalf("%s: %v", c.name(), err)
			}
			rep.add(r)
			e.logger.Info("case done", "name", c.name(), "ready", fmt.Sprintf("%.2fs", r.ReadySeconds),
				"fetched_at_ready", mb(r.BytesAtReady))
			return r
		})
		if !ok {
			e.logger.Warn("case failed", "name", c.name())
		}
	}
	rep.summarize()
	return rep
}

// cases lists the cases in run order.
func (s *Suite) cases(refs map[string]map[Mode]string) []benchCase {
	var cs []benchCase
	for rep := 0; rep < s.opts.reps; rep++ {
		for wi, w := range s.opts.workloads {
			for _, m := range rotate(s.opts.modes, rep+wi) {
				cs = append(cs, benchCase{workload: w, mode: m, rep: rep, ref: refs[w.Name][m]})
			}
		}
	}
	return cs
}

func mb(n int64) string { return fmt.Sprintf("%.1fMB", float64(n)/1e6) }
