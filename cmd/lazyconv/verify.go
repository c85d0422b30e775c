package main

import (
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/lazysnap/lazysnap/convert"
	"github.com/lazysnap/lazysnap/internal/imageref"
	"github.com/spf13/cobra"
)

const verifyHelp = `Verify checks every layer of REF (every image of an index): the blob
against its digest, the eStargz TOC against its digest annotation, every chunk
of every file against its TOC digest, the uncompressed tar against the
config's diff_id, and the prefetch-ranges annotation, if any (a label
containerd accepts, naming regular files of the layer with ranges within
them). It prints one line per layer (digest, media type, size, TOC digest,
files before the prefetch landmark, files with ranges) and exits non-zero
naming the layer and file at fault.

`

func newVerifyCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "verify REF",
		Short: "Verify the eStargz layers of an image",
		Long:  verifyHelp + locationsHelp,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			loc, err := imageref.Parse(args[0], g.plainHTTP)
			if err != nil {
				return err
			}
			a, cleanup, err := loc.Read(ctx, g.tmpDir)
			if err != nil {
				return err
			}
			defer cleanup()
			imgs := []imageref.Artifact{a}
			if a.Index != nil {
				found, err := partial.FindImages(a.Index, func(v1.Descriptor) bool { return true })
				if err != nil {
					return err
				}
				imgs = imgs[:0]
				for _, img := range found {
					imgs = append(imgs, imageref.Artifact{Image: img})
				}
			}
			for _, im := range imgs {
				d, err := im.Image.Digest()
				if err != nil {
					return err
				}
				res, err := convert.Verify(ctx, im.Image, g.tmpDir)
				if err != nil {
					return fmt.Errorf("image %s: %w", d, err)
				}
				out := cmd.OutOrStdout()
				fmt.Fprintf(out, "image %s: OK\n", d)
				for i, r := range res {
					fmt.Fprintf(out, "  layer %d %s %s size=%d toc=%s prioritized=%d ranged=%d\n", i, r.Digest, r.MediaType, r.Size, r.TOCDigest, r.Prioritized, r.Ranged)
				}
			}
			return nil
		},
	}
}
