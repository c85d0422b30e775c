package fs

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// registryDescs are the per-registry sums of the layer counters: a node
// pulls from few registries, and a dashboard wants the traffic to each
// without summing thousands of per-layer series.
type registryDescs struct {
	bytes, requests *prometheus.Desc
}

func newRegistryDescs() registryDescs {
	labels := []string{"registry"}
	return registryDescs{
		bytes: prometheus.NewDesc("lazysnap_fs_registry_fetched_bytes_total",
			"Compressed bytes received for the layers mounted now, by the registry host of their image.", labels, nil),
		requests: prometheus.NewDesc("lazysnap_fs_registry_requests_total",
			"Range requests sent for the layers mounted now, by the registry host of their image.", labels, nil),
	}
}

func (d registryDescs) describe(ch chan<- *prometheus.Desc) {
	ch <- d.bytes
	ch <- d.requests
}

// collect sums status by registry. A layer mounted at two mountpoints
// shares one set of counters, so each layer digest counts once.
func (d registryDescs) collect(ch chan<- prometheus.Metric, status []LayerStatus) {
	type sums struct{ bytes, requests int64 }
	by := map[string]*sums{}
	seen := map[string]bool{}
	for _, s := range status {
		host := registryHost(s.ImageRef)
		key := host + " " + s.Digest.String()
		if seen[key] {
			continue
		}
		seen[key] = true
		if by[host] == nil {
			by[host] = &sums{}
		}
		by[host].bytes += s.BytesFetched
		by[host].requests += s.Requests
	}
	for host, v := range by {
		ch <- prometheus.MustNewConstMetric(d.bytes, prometheus.CounterValue, float64(v.bytes), host)
		ch <- prometheus.MustNewConstMetric(d.requests, prometheus.CounterValue, float64(v.requests), host)
	}
}

// registryHost is the registry part of an image reference as containerd
// labels it (always fully qualified, "docker.io/library/x:1"); a name
// without one is Docker Hub's, as for every containerd client.
func registryHost(ref string) string {
	host, rest, ok := strings.Cut(ref, "/")
	if !ok || rest == "" || !(strings.ContainsAny(host, ".:") || host == "localhost") {
		return "docker.io"
	}
	return host
}
