package snapshot

import (
	"context"
	"errors"
	"fmt"

	"github.com/containerd/errdefs"
	"github.com/prometheus/client_golang/prometheus"
)

// Fallback reasons, the values of the "reason" label of
// lazysnap_snapshot_fallbacks_total.
const (
	// ReasonNoFileSystem: the snapshotter runs without a FileSystem.
	ReasonNoFileSystem = "no-filesystem"
	// ReasonUnsupported: the layer cannot be lazy (plain gzip, no TOC);
	// the FileSystem said so with errdefs.ErrNotImplemented or
	// ErrInvalidArgument.
	ReasonUnsupported = "unsupported-layer"
	// ReasonVerification: the TOC or a chunk did not match its digest
	// (errdefs.ErrDataLoss).
	ReasonVerification = "verification"
	// ReasonUnreachable: the registry could not be reached in time
	// (errdefs.ErrUnavailable, ErrDeadlineExceeded or a context deadline).
	ReasonUnreachable = "unreachable"
	// ReasonOther: any other Mount error.
	ReasonOther = "mount-error"
)

// errNoFileSystem is the Mount error when no FileSystem is configured.
var errNoFileSystem = fmt.Errorf("no lazy file system configured: %w", errdefs.ErrNotImplemented)

type metrics struct {
	fallbacks    *prometheus.CounterVec
	remoteMounts prometheus.Counter
	badLayers    prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		fallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lazysnap_snapshot_fallbacks_total",
			Help: "Layers containerd asked to mount remotely that fell back to a normal pull, by reason.",
		}, []string{"reason"}),
		remoteMounts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lazysnap_snapshot_remote_mounts_total",
			Help: "Layers mounted lazily instead of being pulled.",
		}),
		badLayers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lazysnap_snapshot_bad_layers_total",
			Help: "Remote layers withdrawn from reuse because their content does not match their chain ID.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.fallbacks, m.remoteMounts, m.badLayers} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering snapshot metrics: %w", err)
		}
	}
	return m, nil
}

// fallbackReason names why a Mount failed, from the error's category. The
// ErrNoFileSystem check comes first because it is also ErrNotImplemented;
// data loss comes next because a verification failure may carry another
// category too (package fs reports a TOC digest mismatch, which layer.ReadTOC
// calls a failed precondition, as data loss as well).
func fallbackReason(err error) string {
	switch {
	case errors.Is(err, errNoFileSystem):
		return ReasonNoFileSystem
	case errdefs.IsDataLoss(err):
		return ReasonVerification
	case errdefs.IsNotImplemented(err), errdefs.IsInvalidArgument(err):
		return ReasonUnsupported
	case errdefs.IsUnavailable(err), errdefs.IsDeadlineExceeded(err), errors.Is(err, context.DeadlineExceeded):
		return ReasonUnreachable
	default:
		return ReasonOther
	}
}
