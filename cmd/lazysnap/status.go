package main

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	lazyfs "github.com/lazysnap/lazysnap/fs"
	"github.com/lazysnap/lazysnap/internal/fused"
)

func newStatusCommand() *cobra.Command {
	var root string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show each lazily mounted layer: how much of it is local, and when it became complete",
		Long: "status asks the running `lazysnap fused` (ROOT/fused.sock) for its layers and prints, per layer,\n" +
			"the image, the layer digest, the share of its file bytes in the cache, its state (prefetching,\n" +
			"fetching, lazy or complete) and when its prefetch and its background fetch finished.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			raw, err := fused.NewClient(fusedSocket(root)).Stats(cmd.Context())
			if err != nil {
				return err
			}
			var layers []lazyfs.LayerStatus
			if err := json.Unmarshal(raw, &layers); err != nil {
				return fmt.Errorf("decoding fused's status: %w", err)
			}
			return printStatus(cmd.OutOrStdout(), layers)
		},
	}
	cmd.Flags().StringVar(&root, "root", defaultConfig().Root, "state directory of the fused to ask")
	return cmd
}

// printStatus writes one table row per layer.
func printStatus(w io.Writer, layers []lazyfs.LayerStatus) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "IMAGE\tLAYER\tFETCHED\tSTATE\tPREFETCHED AT\tCOMPLETE AT")
	for _, l := range layers {
		fmt.Fprintf(tw, "%s\t%s\t%.1f%%\t%s\t%s\t%s\n", l.ImageRef, shortDigest(l.Digest.String()),
			l.FetchedPercent, l.State, clock(l.PrefetchDoneAt), clock(l.BackgroundDoneAt))
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
