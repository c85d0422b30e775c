package snapshot

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Results of a remote mount, the values of the "result" label of
// lazysnap_snapshot_mount_duration_seconds.
const (
	// MountResultLazy: the layer was mounted from the registry.
	MountResultLazy = "lazy"
	// MountResultFallback: the mount failed and the layer is pulled normally.
	MountResultFallback = "fallback"
)

// mountMetrics times the mount of each remote layer: the part of a Prepare
// containerd waits for before it goes on to the next layer, so it bounds how
// soon a container can start.
type mountMetrics struct {
	duration *prometheus.HistogramVec
}

func newMountMetrics(reg prometheus.Registerer) (*mountMetrics, error) {
	m := &mountMetrics{duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "lazysnap_snapshot_mount_duration_seconds",
		Help: "Time to mount a remote layer (footer, TOC, FUSE mount), by result: lazy or fallback.",
		// 5 ms (a cached TOC) to about 40 s (a registry timing out).
		Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
	}, []string{"result"})}
	if reg == nil {
		return m, nil
	}
	if err := reg.Register(m.duration); err != nil {
		return nil, fmt.Errorf("registering mount metrics: %w", err)
	}
	return m, nil
}

// observe records a mount that started at start; err is the mount's error.
func (m *mountMetrics) observe(start time.Time, err error) {
	result := MountResultLazy
	if err != nil {
		result = MountResultFallback
	}
	m.duration.WithLabelValues(result).Observe(time.Since(start).Seconds())
}
