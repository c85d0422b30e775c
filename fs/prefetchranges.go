package fs

import (
	"log/slog"
	"strings"

	"github.com/lazysnap/lazysnap/prefetchlist"
)

// LabelPrefetchRanges carries, for a layer `lazyconv convert --prioritize`
// converted with a trace's ranges, the large files start-up reads only
// parts of, with those parts (see prefetchlist.LayerAnnotation): the
// converter leaves them in place instead of before the landmark, and the
// Mount prefetches their ranges beside the prioritized region.
const LabelPrefetchRanges = prefetchlist.LayerAnnotation

// labelRanges reads the LabelPrefetchRanges label of a Mount. The label
// comes with the image, so it is taken as hostile: a value larger than
// containerd lets through is ignored whole, lines the list format rejects
// are skipped, and only paths with ranges are kept (a path without would be
// prefetched whole, which the prioritized region is for). Paths the layer
// lacks, and ranges past a file's end, select nothing when prefetched
// (layer.PrefetchFiles); every chunk fetched is verified as any other.
func labelRanges(labels map[string]string, logger *slog.Logger) ([]string, map[string][]prefetchlist.Range) {
	v, ok := labels[LabelPrefetchRanges]
	if !ok {
		return nil, nil
	}
	if len(LabelPrefetchRanges)+len(v) > prefetchlist.MaxLabelSize {
		logger.Warn("prefetch ranges label too large; ignored", "bytes", len(v))
		return nil, nil
	}
	list, err := prefetchlist.Read(strings.NewReader(v))
	if err != nil || len(list.Rejected) > 0 {
		logger.Warn("prefetch ranges label partly ignored", "rejected", len(list.Rejected), "error", err)
	}
	var paths []string
	for _, p := range list.Paths {
		if len(list.Ranges[p]) > 0 {
			paths = append(paths, p)
		}
	}
	if len(paths) == 0 {
		return nil, nil
	}
	return paths, list.Ranges
}
