package bench

import (
	"fmt"
	"image/color"
	"os"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// panel is one chart of the figure: a measure of the summaries.
type panel struct {
	title, yLabel string
	measure       func(Summary) Spread
}

func chartPanels() []panel {
	return []panel{
		{"Time to ready (median, bars: min–max)", "seconds", func(s Summary) Spread { return s.Ready }},
		{"Registry bytes before ready", "MB", func(s Summary) Spread { return s.MBAtReady }},
	}
}

// WriteChart draws the panels side by side as a PNG: per workload, one bar
// per mode with the median, and a line from the minimum to the maximum.
func (r *Report) WriteChart(path string) error {
	panels := chartPanels()
	row := make([]*plot.Plot, len(panels))
	for i, p := range panels {
		pl, err := r.barPlot(p)
		if err != nil {
			return err
		}
		row[i] = pl
	}
	const width, height = 12 * vg.Inch, 5 * vg.Inch
	img := vgimg.New(width, height)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 1, Cols: len(panels), PadX: vg.Millimeter * 6, PadTop: vg.Millimeter * 2,
		PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	canvases := plot.Align([][]*plot.Plot{row}, tiles, dc)
	for i, pl := range row {
		pl.Draw(canvases[0][i])
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("creating chart: %w", err)
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("writing chart: %w", err)
	}
	return f.Close()
}

func (r *Report) barPlot(p panel) (*plot.Plot, error) {
	pl := plot.New()
	pl.Title.Text = fmt.Sprintf("%s\n%.0f Mbit/s, +%.0f ms per request", p.title, r.Config.RateMbit, r.Config.DelayMS)
	pl.Y.Label.Text = p.yLabel
	pl.Y.Min = 0
	pl.Legend.Top = true
	var names []string
	for _, w := range r.Config.Workloads {
		names = append(names, w.Name)
	}
	pl.NominalX(names...)
	barWidth := vg.Points(min(60, 360/float64(len(r.Config.Modes)*len(names))))
	for i, m := range r.Config.Modes {
		spreads := r.spreadsOf(m, p.measure)
		bars, err := plotter.NewBarChart(medians(spreads), barWidth)
		if err != nil {
			return nil, fmt.Errorf("charting %s: %w", m, err)
		}
		bars.Color = plotutil.Color(i)
		bars.LineStyle.Width = 0
		bars.Offset = barWidth * vg.Length(float64(i)-float64(len(r.Config.Modes)-1)/2)
		pl.Add(bars, &rangeMarks{spreads: spreads, offset: bars.Offset})
		pl.Legend.Add(string(m), bars)
	}
	pl.Y.Max *= 1.3 // room for the legend above the bars
	return pl, nil
}

// spreadsOf returns m's spread of measure for each workload, in order.
func (r *Report) spreadsOf(m Mode, measure func(Summary) Spread) []Spread {
	out := make([]Spread, len(r.Config.Workloads))
	for i, w := range r.Config.Workloads {
		if s, ok := r.find(w.Name, m); ok {
			out[i] = measure(s)
		}
	}
	return out
}

func medians(ss []Spread) plotter.Values {
	v := make(plotter.Values, len(ss))
	for i, s := range ss {
		v[i] = s.Median
	}
	return v
}

// rangeMarks draws a min–max line with caps on each bar of a bar chart
// (the bar at category i, shifted by offset).
type rangeMarks struct {
	spreads []Spread
	offset  vg.Length
}

func (m *rangeMarks) Plot(c draw.Canvas, pl *plot.Plot) {
	trX, trY := pl.Transforms(&c)
	style := draw.LineStyle{Color: color.Black, Width: vg.Points(1)}
	const capHalf = vg.Length(3)
	for i, s := range m.spreads {
		x := trX(float64(i)) + m.offset
		lo, hi := trY(s.Min), trY(s.Max)
		c.StrokeLine2(style, x, lo, x, hi)
		c.StrokeLine2(style, x-capHalf, lo, x+capHalf, lo)
		c.StrokeLine2(style, x-capHalf, hi, x+capHalf, hi)
	}
}

// DataRange makes the axes include every maximum.
func (m *rangeMarks) DataRange() (xmin, xmax, ymin, ymax float64) {
	xmax = float64(len(m.spreads) - 1)
	for _, s := range m.spreads {
		ymax = max(ymax, s.Max)
	}
	return 0, xmax, 0, ymax
}
