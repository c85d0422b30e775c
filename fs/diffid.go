package fs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"

	"github.com/lazysnap/lazysnap/fs/layer"
)

// Labels that bind a mounted layer to the snapshot containerd commits it
// as. containerd names a committed layer by its chain ID, which it computes
// from the diff_ids the image config claims; nothing else ties the lazily
// mounted blob to that name, so an image claiming another image's diff_ids
// would have its content reused for the other image. With these labels the
// FS streams the blob in the background, computes its real diff_id and
// chain ID, and marks the layer bad if they differ.
const (
	// LabelChainID is the name the snapshot is committed under (the
	// unpacker's target, snapshots.LabelSnapshotRef): the layer's chain ID.
	LabelChainID = snapshots.LabelSnapshotRef
	// LabelParentChainID is the chain ID of the snapshot the layer sits on,
	// "" or absent for a bottom layer. The snapshotter adds it.
	LabelParentChainID = "containerd.io/snapshot/lazysnap.parent-chain-id"
	// LabelBad, set by the snapshotter on a layer found bad before (for
	// example before a restart), holds why: the layer is mounted with
	// every read refused, and not verified again.
	LabelBad = "containerd.io/snapshot/lazysnap.bad"
)

// chainCheck is what a layer's content must add up to.
type chainCheck struct {
	target, parent digest.Digest
}

// parseChain reads the chain labels; ok is false when they are absent or
// not chain IDs (a mount outside containerd, such as `lazysnap mount`).
func parseChain(labels map[string]string) (chainCheck, bool) {
	t, err := digest.Parse(labels[LabelChainID])
	if err != nil {
		return chainCheck{}, false
	}
	c := chainCheck{target: t}
	if p := labels[LabelParentChainID]; p != "" {
		if c.parent, err = digest.Parse(p); err != nil {
			return chainCheck{}, false
		}
	}
	return c, true
}

// Diff-ID states reported by Status.
const (
	DiffIDPending  = "pending"  // not verified yet (the stream runs in the background)
	DiffIDVerified = "verified" // the blob decompresses to the diff_id its chain ID promises
	DiffIDMismatch = "mismatch" // it does not: the layer is bad
	DiffIDFailed   = "failed"   // the blob could not be streamed whole; checked again at the next mount
	DiffIDOff      = "off"      // no chain ID to check against, or verification off
)

// verifyChain streams the layer's blob (which also fills the cache) and
// compares the chain ID its content adds up to with the one containerd
// committed it as. A layer verified before (a record in the verified dir)
// is not streamed again. A mismatch marks the layer bad; a blob the
// registry cannot serve whole leaves it pending until the next mount.
func (f *FS) verifyChain(ctx context.Context, m *mounted) {
	if f.isVerified(m) {
		m.diffID.Store(DiffIDVerified)
		return
	}
	start := time.Now()
	diffID, err := m.layer.StreamAll(ctx)
	switch {
	case ctx.Err() != nil:
		return
	case errors.Is(err, errdefs.ErrDataLoss):
		f.markBad(ctx, m, err)
		return
	case err != nil:
		m.diffID.Store(DiffIDFailed)
		f.opts.logger.Warn("layer not verified: its blob could not be streamed; verified at its next mount",
			"image", m.ref, "layer", m.layer.Digest(), "error", err)
		return
	}
	if got := layer.ChainID(m.chain.parent, diffID); got != m.chain.target {
		f.markBad(ctx, m, fmt.Errorf("its blob decompresses to diff_id %s, making chain ID %s, but it was committed as %s",
			diffID, got, m.chain.target))
		return
	}
	m.diffID.Store(DiffIDVerified)
	f.recordVerified(m, diffID)
	f.opts.logger.Info("layer verified against its diff_id", "image", m.ref, "layer", m.layer.Digest(),
		"diff_id", diffID, "took", time.Since(start))
}

func (f *FS) markBad(ctx context.Context, m *mounted, why error) {
	m.layer.MarkBad(why)
	m.diffID.Store(DiffIDMismatch)
	f.diffIDMismatches.Add(1)
	f.opts.logger.ErrorContext(ctx, "layer content does not match the image's diff_id; its reads fail from now on",
		"image", m.ref, "layer", m.layer.Digest(), "snapshot", m.chain.target, "error", why)
}

// verifiedRecord names the file recording that a blob, on a parent, adds
// up to a chain ID.
func (f *FS) verifiedRecord(blob digest.Digest, c chainCheck) string {
	if f.opts.verifiedDir == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(blob.String() + " " + c.parent.String() + " " + c.target.String()))
	return filepath.Join(f.opts.verifiedDir, hex.EncodeToString(sum[:]))
}

func (f *FS) isVerified(m *mounted) bool { return f.recordedVerified(m.layer.Digest(), m.chain) }

func (f *FS) recordedVerified(blob digest.Digest, c chainCheck) bool {
	p := f.verifiedRecord(blob, c)
	if p == "" {
		return false
	}
	_, err := os.Stat(p)
	return err == nil
}

// recordVerified writes the record; failing to is only a cost (the layer
// is streamed again at its next mount).
func (f *FS) recordVerified(m *mounted, diffID digest.Digest) {
	p := f.verifiedRecord(m.layer.Digest(), m.chain)
	if p == "" {
		return
	}
	err := os.MkdirAll(filepath.Dir(p), 0o700)
	if err == nil {
		tmp := p + ".tmp"
		if err = os.WriteFile(tmp, []byte(diffID.String()+"\n"), 0o600); err == nil {
			err = os.Rename(tmp, p)
		}
	}
	if err != nil {
		f.opts.logger.Warn("recording a verified layer", "layer", m.layer.Digest(), "error", err)
	}
}

// BadLayers returns, by mountpoint, why each bad mounted layer is bad: for
// the snapshotter to withdraw them from reuse.
func (f *FS) BadLayers(context.Context) (map[string]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]string{}
	for mp, m := range f.mounts {
		if m == nil {
			continue
		}
		if err := m.layer.Bad(); err != nil {
			out[mp] = err.Error()
		}
	}
	return out, nil
}

// prepareSpoolDir makes the directory of the layers' spools (WithSpoolDir).
// Nothing there needs cleaning: a spool file is unlinked as soon as it is
// created, before a byte is written to it. Failing costs only bytes: the
// layers' streams then fetch again what reads fetched.
func (f *FS) prepareSpoolDir() {
	if f.opts.spoolDir == "" {
		return
	}
	if err := os.MkdirAll(f.opts.spoolDir, 0o700); err != nil {
		f.opts.logger.Warn("no spool for the diff_id streams", "dir", f.opts.spoolDir, "error", err)
	}
}
