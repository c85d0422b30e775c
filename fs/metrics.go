package fs

import (
	"github.com/prometheus/client_golang/prometheus"
)

// collector exports Status as Prometheus metrics, computed at scrape time.
type collector struct {
	f *FS

	bytesFetched, requests, backgroundRequests, cacheHits *prometheus.Desc
	cacheCorruptions, streamSpooled, headsFetched         *prometheus.Desc
	wholeFiles, leftToReads                               *prometheus.Desc
	fetchedRatio, prefetchDone, backgroundDone, layers    *prometheus.Desc
	diffIDVerified, bad, diffIDMismatches                 *prometheus.Desc
	backgroundYield                                       *prometheus.Desc
	registries                                            registryDescs
}

// Collector returns a Prometheus collector of the FS's per-layer counters,
// for the daemon to register.
func (f *FS) Collector() prometheus.Collector {
	// A layer mounted twice (two snapshots) has two mountpoints.
	metricLabels := []string{"image", "layer", "mountpoint"}
	desc := func(name, help string, labels []string) *prometheus.Desc {
		return prometheus.NewDesc("lazysnap_fs_"+name, help, labels, nil)
	}
	return &collector{
		f:                  f,
		bytesFetched:       desc("layer_fetched_bytes_total", "Compressed bytes received from the registry for the layer.", metricLabels),
		requests:           desc("layer_requests_total", "Range requests sent for the layer (TOC and footer included).", metricLabels),
		backgroundRequests: desc("layer_background_requests_total", "Range requests of the layer's background fetch.", metricLabels),
		streamSpooled:      desc("layer_stream_spooled_bytes_total", "Compressed bytes the layer's diff_id stream took from its spool, fetched earlier by reads, instead of the registry.", metricLabels),
		headsFetched:       desc("layer_heads_fetched_total", "First chunks of the layer's files fetched ahead of the dynamic loader, for a binary that needs them (fetch.libraries).", metricLabels),
		wholeFiles:         desc("layer_whole_files_total", "Files of the layer whose other chunks were fetched because two of their reads missed.", metricLabels),
		leftToReads:        desc("layer_files_left_to_reads_total", "Files of the layer never fetched whole on their second missed read, being libraries that are mostly data.", metricLabels),
		cacheHits:          desc("layer_cache_hits_total", "Reads of the layer served from the cache without fetching.", metricLabels),
		cacheCorruptions:   desc("layer_cache_corruptions_total", "Chunks cached by an earlier run that failed verification.", metricLabels),
		fetchedRatio:       desc("layer_fetched_ratio", "Share (0 to 1) of the layer's file bytes present in the cache.", metricLabels),
		prefetchDone:       desc("layer_prefetch_complete", "1 once the layer's prioritized region is in the cache.", metricLabels),
		backgroundDone:     desc("layer_complete", "1 once every chunk of the layer is in the cache.", metricLabels),
		layers:             desc("mounted_layers", "Layers mounted.", nil),
		diffIDVerified:     desc("layer_diffid_verified", "1 once the layer's blob was found to decompress to the diff_id its chain ID promises.", metricLabels),
		bad:                desc("layer_bad", "1 when the layer's content does not match its diff_id: its reads fail.", metricLabels),
		diffIDMismatches:   desc("diffid_mismatches_total", "Layers found not to decompress to the diff_id their chain ID promises.", nil),
		backgroundYield:    desc("background_yield_seconds_total", "Time the background fetch waited for the node's other processes to leave cores free (background_fetch.min_free_cores).", nil),
		registries:         newRegistryDescs(),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.bytesFetched, c.requests, c.backgroundRequests, c.streamSpooled, c.headsFetched, c.wholeFiles, c.leftToReads, c.cacheHits,
		c.cacheCorruptions, c.fetchedRatio, c.prefetchDone, c.backgroundDone, c.layers, c.diffIDVerified, c.bad, c.diffIDMismatches, c.backgroundYield} {
		ch <- d
	}
	c.registries.describe(ch)
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	status := c.f.Status()
	ch <- prometheus.MustNewConstMetric(c.layers, prometheus.GaugeValue, float64(len(status)))
	ch <- prometheus.MustNewConstMetric(c.diffIDMismatches, prometheus.CounterValue, float64(c.f.diffIDMismatches.Load()))
	ch <- prometheus.MustNewConstMetric(c.backgroundYield, prometheus.CounterValue, c.f.sched.Stats().BackgroundYielded.Seconds())
	c.registries.collect(ch, status)
	for _, s := range status {
		lv := []string{s.ImageRef, s.Digest.String(), s.Mountpoint}
		counter := func(d *prometheus.Desc, v int64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), lv...)
		}
		gauge := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, lv...)
		}
		counter(c.bytesFetched, s.BytesFetched)
		counter(c.requests, s.Requests)
		counter(c.backgroundRequests, s.BackgroundRequests)
		counter(c.streamSpooled, s.StreamSpooledBytes)
		counter(c.headsFetched, s.HeadsFetched)
		counter(c.wholeFiles, s.WholeFiles)
		counter(c.leftToReads, s.FilesLeftToReads)
		counter(c.cacheHits, s.CacheHits)
		counter(c.cacheCorruptions, s.CacheCorruptions)
		gauge(c.fetchedRatio, s.FetchedPercent/100)
		gauge(c.prefetchDone, boolValue(s.PrefetchDone))
		gauge(c.backgroundDone, boolValue(s.State == StateComplete))
		gauge(c.diffIDVerified, boolValue(s.DiffID == DiffIDVerified))
		gauge(c.bad, boolValue(s.State == StateBad))
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
