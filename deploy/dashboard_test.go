package deploy

import (
	"context"
	"encoding/json"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	lazyfs "github.com/lazysnap/lazysnap/fs"
	"github.com/lazysnap/lazysnap/snapshot"
)

const dashboardFile = "grafana/lazysnap-dashboard.json"

// dashboard is the part of a Grafana dashboard the test reads.
type dashboard struct {
	Title  string `json:"title"`
	Panels []struct {
		Title   string `json:"title"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

// TestDashboardUsesRealMetrics checks every query of the Grafana dashboard
// against the metric names lazysnap's own collectors describe (fused's
// fs.FS.Collector and serve's snapshotter metrics), so a renamed metric
// breaks this test instead of a panel.
func TestDashboardUsesRealMetrics(t *testing.T) {
	known := realMetricNames(t)
	var d dashboard
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	used := map[string]bool{}
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			names := metricRefs(tg.Expr)
			if len(names) == 0 {
				t.Errorf("panel %q: query %q names no lazysnap metric", p.Title, tg.Expr)
			}
			for _, n := range names {
				used[n] = true
				if !known[n] {
					t.Errorf("panel %q: %s is not a metric lazysnap exports", p.Title, n)
				}
			}
		}
	}
	// What the dashboard is for: each of these must have a panel.
	for _, n := range []string{
		"lazysnap_snapshot_mount_duration_seconds_bucket", "lazysnap_snapshot_fallbacks_total",
		"lazysnap_fs_registry_fetched_bytes_total", "lazysnap_fs_registry_requests_total",
		"lazysnap_fs_layer_cache_hits_total", "lazysnap_fs_layer_fetched_ratio", "lazysnap_fs_layer_bad",
		"lazysnap_snapshot_bad_layers_total", "lazysnap_fs_layer_cache_corruptions_total",
	} {
		if !used[n] {
			t.Errorf("no panel shows %s", n)
		}
	}
}

var metricRef = regexp.MustCompile(`\blazysnap_[a-z0-9_]+`)

func metricRefs(expr string) []string { return metricRef.FindAllString(expr, -1) }

// realMetricNames returns the series names lazysnap's collectors describe,
// histograms expanded to their _bucket, _sum and _count series.
func realMetricNames(t *testing.T) map[string]bool {
	t.Helper()
	fsys, err := lazyfs.New(lazyfs.WithCacheDir(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fsys.Close() })
	rec := &recordingRegisterer{}
	sn, err := snapshot.New(context.Background(), t.TempDir(), nil, snapshot.WithRegisterer(rec))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sn.Close() })
	names := map[string]bool{}
	for _, c := range append(rec.collectors, fsys.Collector()) {
		ch := make(chan *prometheus.Desc, 64)
		go func() { c.Describe(ch); close(ch) }()
		for d := range ch {
			name := descName(t, d)
			names[name] = true
			if isHistogram(c) {
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					names[name+suffix] = true
				}
			}
		}
	}
	list := make([]string, 0, len(names))
	for n := range names {
		list = append(list, n)
	}
	sort.Strings(list)
	t.Logf("metrics: %s", strings.Join(list, " "))
	return names
}

// recordingRegisterer keeps what the snapshotter registers.
type recordingRegisterer struct{ collectors []prometheus.Collector }

func (r *recordingRegisterer) Register(c prometheus.Collector) error {
	r.collectors = append(r.collectors, c)
	return nil
}

func (r *recordingRegisterer) MustRegister(cs ...prometheus.Collector) {
	r.collectors = append(r.collectors, cs...)
}

func (r *recordingRegisterer) Unregister(prometheus.Collector) bool { return false }

// isHistogram tells a histogram from the other collectors.
func isHistogram(c prometheus.Collector) bool {
	_, ok := c.(prometheus.ObserverVec)
	_, single := c.(prometheus.Histogram)
	return ok || single
}

var descFQName = regexp.MustCompile(`fqName: "([^"]+)"`)

// descName reads a Desc's name: the client library prints it but has no
// getter.
func descName(t *testing.T, d *prometheus.Desc) string {
	t.Helper()
	m := descFQName.FindStringSubmatch(d.String())
	if m == nil {
		t.Fatalf("cannot read the name of %s", d)
	}
	return m[1]
}
