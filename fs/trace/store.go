package trace

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"

	"github.com/lazysnap/lazysnap/prefetchlist"
)

// Dir keeps one trace file per image in a directory, named by the sha256 of
// the image reference so any reference is a safe file name.
type Dir string

// File returns the path of image's trace file.
func (d Dir) File(image string) string {
	sum := sha256.Sum256([]byte(image))
	return filepath.Join(string(d), hex.EncodeToString(sum[:])+".txt")
}

// Save writes r's paths and ranges to its image's file if they changed
// since the last save, atomically: a reader sees the old file or the new
// one.
func (d Dir) Save(r *Recorder) error {
	paths, ranges, dirty := r.snapshot()
	if !dirty {
		return nil
	}
	if err := os.MkdirAll(string(d), 0o700); err != nil {
		return fmt.Errorf("creating the trace directory: %w", err)
	}
	tmp, err := os.CreateTemp(string(d), ".trace-*")
	if err != nil {
		return fmt.Errorf("saving the trace of %s: %w", r.image, err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename there is nothing to remove
	err = errors.Join(Write(tmp, r.image, paths, prefetchlist.WithRanges(ranges)), tmp.Close())
	if err == nil {
		err = os.Rename(tmp.Name(), d.File(r.image))
	}
	if err != nil {
		return fmt.Errorf("saving the trace of %s: %w", r.image, err)
	}
	r.markSaved()
	return nil
}

// Load returns the trace saved for image. It fails with errdefs.ErrNotFound
// when there is none, and ErrFailedPrecondition when the file names another
// image (a hash collision cannot happen; a copied file can).
func (d Dir) Load(image string) (Parsed, error) {
	f, err := os.Open(d.File(image))
	if errors.Is(err, os.ErrNotExist) {
		return Parsed{}, fmt.Errorf("no trace recorded for %s in %s: %w", image, d, errdefs.ErrNotFound)
	}
	if err != nil {
		return Parsed{}, fmt.Errorf("opening the trace of %s: %w", image, err)
	}
	defer f.Close()
	p, err := Read(f)
	if err != nil {
		return p, fmt.Errorf("trace of %s: %w", image, err)
	}
	if p.Image != "" && p.Image != image {
		return p, fmt.Errorf("trace file %s is for %s, not %s: %w", d.File(image), p.Image, image, errdefs.ErrFailedPrecondition)
	}
	return p, nil
}

// Resume returns a Recorder for image that continues the trace saved in d,
// if any: after a restart the first opens of the earlier run come first,
// and new ones follow; the ranges read of a file are those saved and those
// read since (the union). A damaged or foreign file is ignored (returned as
// warnings) and a fresh trace starts.
func (d Dir) Resume(image string, maxPaths int) (*Recorder, []string) {
	r := NewRecorder(image, maxPaths)
	p, err := d.Load(image)
	if errors.Is(err, errdefs.ErrNotFound) {
		return r, nil
	}
	if err != nil {
		return r, append(p.Warnings, err.Error())
	}
	for _, path := range p.Paths {
		r.Record(path)
	}
	for path, rs := range p.Ranges {
		r.AddRanges(path, rs)
	}
	r.markSaved()
	return r, p.Warnings
}

// List returns the images with a trace in d.
func (d Dir) List() ([]string, error) {
	names, err := filepath.Glob(filepath.Join(string(d), "*.txt"))
	if err != nil {
		return nil, err
	}
	var images []string
	for _, n := range names {
		f, err := os.Open(n)
		if err != nil {
			continue // removed meanwhile
		}
		p, _ := Read(f)
		f.Close()
		if p.Image != "" && strings.HasSuffix(n, filepath.Base(d.File(p.Image))) {
			images = append(images, p.Image)
		}
	}
	return images, nil
}
