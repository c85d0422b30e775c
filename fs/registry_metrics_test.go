package fs

import (
	"maps"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/lazysnap/lazysnap/fs/layer"
)

func TestRegistryHost(t *testing.T) {
	for ref, want := range map[string]string{
		"127.0.0.1:5000/small:esgz":          "127.0.0.1:5000",
		"registry.example.com/a/b@sha256:00": "registry.example.com",
		"docker.io/library/python:3":         "docker.io",
		"localhost/app:1":                    "localhost",
		"library/python:3":                   "docker.io",
		"python":                             "docker.io",
		"":                                   "docker.io",
	} {
		if got := registryHost(ref); got != want {
			t.Errorf("registryHost(%q) = %q, want %q", ref, got, want)
		}
	}
}

// TestRegistrySums sums layers by registry, counting a layer mounted twice
// once.
func TestRegistrySums(t *testing.T) {
	st := func(ref, dgst, mp string, bytes, reqs int64) LayerStatus {
		return LayerStatus{ImageRef: ref, Mountpoint: mp,
			Stats: layer.Stats{Digest: digest.Digest("sha256:" + strings.Repeat(dgst, 64)), BytesFetched: bytes, Requests: reqs}}
	}
	status := []LayerStatus{
		st("a.example/x:1", "1", "/m1", 100, 2),
		st("a.example/x:1", "1", "/m2", 100, 2), // same layer, second snapshot
		st("a.example/y:1", "2", "/m3", 50, 1),
		st("b.example:5000/z:1", "3", "/m4", 7, 3),
	}
	d := newRegistryDescs()
	c := collectorFunc{describe: d.describe, collect: func(ch chan<- prometheus.Metric) { d.collect(ch, status) }}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			got[f.GetName()+" "+m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
	}
	want := map[string]float64{
		"lazysnap_fs_registry_fetched_bytes_total a.example":      150,
		"lazysnap_fs_registry_fetched_bytes_total b.example:5000": 7,
		"lazysnap_fs_registry_requests_total a.example":           3,
		"lazysnap_fs_registry_requests_total b.example:5000":      3,
	}
	if !maps.Equal(got, want) {
		t.Errorf("got %v\nwant %v", got, want)
	}
}

type collectorFunc struct {
	describe func(chan<- *prometheus.Desc)
	collect  func(chan<- prometheus.Metric)
}

func (c collectorFunc) Describe(ch chan<- *prometheus.Desc) { c.describe(ch) }
func (c collectorFunc) Collect(ch chan<- prometheus.Metric) { c.collect(ch) }
