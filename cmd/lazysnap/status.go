package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/containerd/errdefs"
	"github.com/spf13/cobra"

	lazyfs "github.com/lazysnap/lazysnap/fs"
	"github.com/lazysnap/lazysnap/internal/fused"
)

// Output formats of `lazysnap status`.
const (
	outputImages = "table"  // one row per image
	outputLayers = "layers" // one row per mounted layer
	outputJSON   = "json"   // images with their layers, for scripts
)

func newStatusCommand() *cobra.Command {
	var root, output string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show each lazily pulled image and layer: how much of it is local, and whether it was verified",
		Long: "status asks the running `lazysnap fused` (ROOT/fused.sock) for its mounted layers. The default\n" +
			"table has one row per image: its layers, the share of its file bytes in the cache, its state\n" +
			"(the least advanced of its layers: bad, prefetching, fetching, lazy, complete), the diff_id\n" +
			"check of its layers and how many finished their background fetch. `-o layers` prints one row\n" +
			"per layer; `-o json` (or --json) prints the images with every layer's counters.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if asJSON {
				output = outputJSON
			}
			raw, err := fused.NewClient(fusedSocket(root)).Stats(cmd.Context())
			if err != nil {
				return err
			}
			var layers []lazyfs.LayerStatus
			if err := json.Unmarshal(raw, &layers); err != nil {
				return fmt.Errorf("decoding fused's status: %w", err)
			}
			return writeStatus(cmd.OutOrStdout(), output, layers)
		},
	}
	f := cmd.Flags()
	f.StringVar(&root, "root", defaultConfig().Root, "state directory of the fused to ask")
	f.StringVarP(&output, "output", "o", outputImages, "output format: table (by image), layers or json")
	f.BoolVar(&asJSON, "json", false, "same as --output json")
	return cmd
}

func writeStatus(w io.Writer, output string, layers []lazyfs.LayerStatus) error {
	switch output {
	case outputImages:
		return printImages(w, summarize(layers))
	case outputLayers:
		return printStatus(w, layers)
	case outputJSON:
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(summarize(layers))
	}
	return fmt.Errorf("unknown output format %q (table, layers or json): %w", output, errdefs.ErrInvalidArgument)
}

// imageStatus is one image's layers as `lazysnap status` shows them.
type imageStatus struct {
	Image          string  `json:"image"`
	Layers         int     `json:"layers"`
	FetchedPercent float64 `json:"fetched_percent"` // file bytes in the cache, over all its layers
	State          string  `json:"state"`           // its least advanced layer's
	// DiffIDs counts its layers by diff_id check state.
	DiffIDs map[string]int `json:"diff_ids"`
	// BackgroundDone counts its layers whose every chunk is in the cache.
	BackgroundDone int                  `json:"background_done"`
	LayerStatus    []lazyfs.LayerStatus `json:"layer_status"`
}

// stateRank orders layer states from least to most advanced: an image is as
// far as its least advanced layer. An unknown state ranks last.
func stateRank(state string) int {
	switch state {
	case lazyfs.StateBad:
		return 0
	case lazyfs.StatePrefetching:
		return 1
	case lazyfs.StateFetching:
		return 2
	case lazyfs.StateLazy:
		return 3
	}
	return 4
}

// summarize groups layers (sorted by image, as fused sends them) by image.
func summarize(layers []lazyfs.LayerStatus) []imageStatus {
	var out []imageStatus
	var present, total int64
	for _, l := range layers {
		if len(out) == 0 || out[len(out)-1].Image != l.ImageRef {
			out = append(out, imageStatus{Image: l.ImageRef, State: lazyfs.StateComplete, DiffIDs: map[string]int{}})
			present, total = 0, 0
		}
		img := &out[len(out)-1]
		img.Layers++
		img.LayerStatus = append(img.LayerStatus, l)
		img.DiffIDs[l.DiffID]++
		if l.BackgroundDone || l.State == lazyfs.StateComplete {
			img.BackgroundDone++
		}
		if stateRank(l.State) < stateRank(img.State) {
			img.State = l.State
		}
		present, total = present+l.BytesPresent, total+l.BytesTotal
		img.FetchedPercent = 100
		if total > 0 {
			img.FetchedPercent = 100 * float64(present) / float64(total)
		}
	}
	return out
}

// printImages writes one table row per image.
func printImages(w io.Writer, images []imageStatus) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "IMAGE\tLAYERS\tFETCHED\tSTATE\tDIFF_ID\tBACKGROUND")
	for _, img := range images {
		fmt.Fprintf(tw, "%s\t%d\t%.1f%%\t%s\t%s\t%d/%d complete\n", img.Image, img.Layers, img.FetchedPercent,
			img.State, diffIDSummary(img.DiffIDs), img.BackgroundDone, img.Layers)
	}
	return tw.Flush()
}

// diffIDSummary is "3 verified" or "2 verified, 1 pending", in a fixed order.
func diffIDSummary(counts map[string]int) string {
	var parts []string
	for _, s := range []string{lazyfs.DiffIDVerified, lazyfs.DiffIDPending, lazyfs.DiffIDFailed,
		lazyfs.DiffIDMismatch, lazyfs.DiffIDOff, ""} {
		if n := counts[s]; n > 0 {
			if s == "" {
				s = "unknown"
			}
			parts = append(parts, fmt.Sprintf("%d %s", n, s))
		}
	}
	return strings.Join(parts, ", ")
}

// printStatus writes one table row per layer.
func printStatus(w io.Writer, layers []lazyfs.LayerStatus) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "IMAGE\tLAYER\tFETCHED\tSTATE\tDIFF_ID\tPREFETCHED AT\tCOMPLETE AT")
	for _, l := range layers {
		fmt.Fprintf(tw, "%s\t%s\t%.1f%%\t%s\t%s\t%s\t%s\n", l.ImageRef, shortDigest(l.Digest.String()),
			l.FetchedPercent, l.State, l.DiffID, clock(l.PrefetchDoneAt), clock(l.BackgroundDoneAt))
	}
	return tw.Flush()
}

func shortDigest(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}

func clock(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format(time.DateTime)
}
