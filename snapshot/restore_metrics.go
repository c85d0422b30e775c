package snapshot

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// restoreMetrics counts the remote layers that could not be mounted again
// after a restart: containers that need them fail to start until they are.
type restoreMetrics struct {
	unmounted prometheus.Gauge
}

func newRestoreMetrics(reg prometheus.Registerer) (*restoreMetrics, error) {
	m := &restoreMetrics{unmounted: prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "lazysnap_snapshot_unmounted_layers",
		Help: "Committed remote layers that could not be mounted again since serve started; retried in the background.",
	})}
	if reg == nil {
		return m, nil
	}
	if err := reg.Register(m.unmounted); err != nil {
		return nil, fmt.Errorf("registering restore metrics: %w", err)
	}
	return m, nil
}
