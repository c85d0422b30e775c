package bench

import (
	"fmt"
	"io"
	"text/tabwriter"
)

// WriteTable prints the summaries: medians with their range over
// repetitions, and the speed-up over overlayfs.
func (r *Report) WriteTable(out io.Writer) error {
	c := r.Config
	fmt.Fprintf(out, "link %.0f Mbit/s, +%.0f ms per request; %d repetitions; bytes and requests are registry blob GETs; lazysnap %.12s; fresh disk per case: %v\n",
		c.RateMbit, c.DelayMS, c.Reps, c.Binaries["lazysnap"], c.FreshDisks)
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "image\tmode\tready s\tpull s\tcreate s\trun s\tMB@ready\treq@ready\tMB total\treq total\tvs overlayfs\t")
	for _, s := range r.Summaries {
		settled := ""
		if !s.Settled {
			settled = "+" // the totals are a lower bound: the settle cap cut the wait
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s%s\t%s%s\t%s\t\n", s.Workload, s.Mode,
			amount(s.Ready, "%.2f"), amount(s.Pull, "%.2f"), amount(s.Create, "%.2f"), amount(s.Run, "%.2f"),
			amount(s.MBAtReady, "%.1f"), amount(s.RequestsAtReady, "%.0f"),
			amount(s.MBTotal, "%.1f"), settled, amount(s.RequestsTotal, "%.0f"), settled, speedup(s.Speedup))
	}
	if err := w.Flush(); err != nil {
		return err
	}
	for _, f := range r.Floors {
		fmt.Fprintf(out, "%s: physical floor %.2f s = cold local start %.2f s + %.1f MB (fewest before ready, %s) at the link rate + 3 round trips\n",
			f.Workload, f.Seconds, f.LocalSeconds, f.MBNeeded, f.NeededBy)
		for _, s := range r.Summaries {
			if s.Workload == f.Workload && s.Mode.lazy() && f.Seconds > 0 {
				fmt.Fprintf(out, "  %s: %.2fx the floor\n", s.Mode, s.Ready.Median/f.Seconds)
			}
		}
	}
	return nil
}

// amount prints "median (min–max)", or the median alone when all agree.
func amount(s Spread, format string) string {
	if s.Min == s.Max {
		return fmt.Sprintf(format, s.Median)
	}
	return fmt.Sprintf(format+" ("+format+"–"+format+")", s.Median, s.Min, s.Max)
}

func speedup(x float64) string {
	if x == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1fx", x)
}
