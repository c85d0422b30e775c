package record

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/lazysnap/lazysnap/prefetchlist"
)

// StopReason says why a recording ended.
type StopReason string

const (
	// StopReady: the workload printed the wait line.
	StopReady StopReason = "ready"
	// StopExit: the workload exited on its own.
	StopExit StopReason = "exit"
	// StopTimeout: the timeout passed first.
	StopTimeout StopReason = "timeout"
)

// Result is what a recording produced.
type Result struct {
	// Trace lists the image files opened until the stop, in first-open
	// order, and the parts of the large ones read.
	Trace Trace
	// Reason says why the recording stopped.
	Reason StopReason
	// ExitCode is the workload's exit status when Reason is StopExit (128+N
	// for a workload killed by signal N).
	ExitCode int
	// WaitLine is the wait line asked for, if any.
	WaitLine string
}

// Problem returns why the trace may not cover a whole start-up, or nil: the
// workload failed, or exited or timed out without printing the wait line.
// Run logs it as a warning; the trace recorded so far is still usable.
func (r *Result) Problem() error {
	switch {
	case r.Reason == StopExit && r.ExitCode != 0:
		return fmt.Errorf("workload exited with status %d", r.ExitCode)
	case r.Reason != StopReady && r.WaitLine != "":
		return fmt.Errorf("workload stopped (%s) without printing a line containing %q", r.Reason, r.WaitLine)
	}
	return nil
}

// Run runs the workload of img in a sandbox built from img and records the
// files it opens until it prints the wait line, exits, or the timeout
// passes. A workload that fails or never gets ready is not an error: the
// Result says so and holds what was recorded. Errors are for a sandbox that
// cannot be built or run. Run needs root (mounts, fanotify, runc).
func Run(ctx context.Context, img v1.Image, opts ...Option) (_ *Result, err error) {
	o := defaultOptions()
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("reading image config: %w", err)
	}
	sb, err := newSandbox(ctx, img, o.workDir)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, sb.close()) }()
	id, err := newID()
	if err != nil {
		return nil, err
	}
	bundle, err := prepareBundle(ctx, id, cf.Config, sb, &o)
	if err != nil {
		return nil, err
	}
	// Last before the run, so that nothing but the workload reads the
	// dropped pages back.
	var pages *pageRecorder
	if o.ranges {
		pages = dropLargeFiles(sb.lower, o.logger)
	}
	res, opened, err := runRecorded(ctx, id, bundle, sb, &o)
	if err != nil {
		return nil, err
	}
	res.Trace.Paths = imageFiles(opened, sb, o.logger)
	if pages != nil {
		if rs := pages.ranges(res.Trace.Paths, sb.upper, o.logger); len(rs) > 0 {
			res.Trace.Ranges = rs
		}
	}
	if p := res.Problem(); p != nil {
		o.logger.Warn("recording may be incomplete; keeping the files recorded so far", "problem", p, "files", len(res.Trace.Paths))
	}
	o.logger.Info("recorded workload", "stop", res.Reason, "files", len(res.Trace.Paths), "ranged", len(res.Trace.Ranges))
	return res, nil
}

func newID() (string, error) {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("container id: %w", err)
	}
	return "lazysnap-record-" + hex.EncodeToString(b), nil
}

// prepareBundle writes the workload's OCI bundle and returns its directory.
func prepareBundle(ctx context.Context, id string, cfg v1.Config, sb *sandbox, o *options) (string, error) {
	s, err := workloadSpec(ctx, id, cfg, sb, o)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(sb.dir, "bundle")
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", fmt.Errorf("creating bundle: %w", err)
	}
	return dir, writeBundle(dir, s)
}

// runRecorded runs the workload under the recorder and returns why it
// stopped and the paths opened before that.
func runRecorded(ctx context.Context, id, bundle string, sb *sandbox, o *options) (*Result, []string, error) {
	rec, err := startRecorder(sb.merged)
	if err != nil {
		return nil, nil, err
	}
	ready := newReadySignal()
	stdout, stderr := newStreams(o.waitLine, o.output, ready)
	c, err := startContainer(o.runc, filepath.Join(sb.dir, "runc"), bundle, id, stdout, stderr)
	if err != nil {
		_, _ = rec.finish()
		return nil, nil, err
	}
	res := &Result{WaitLine: o.waitLine}
	res.Reason, err = waitStop(ctx, c, ready, o.timeout)
	// Cut the trace first: what the workload opens while being killed is
	// not part of its start-up.
	opened, recErr := rec.finish()
	stopErr := c.stop(context.WithoutCancel(ctx))
	if err = errors.Join(err, recErr, stopErr); err != nil {
		return nil, nil, err
	}
	if res.Reason == StopExit {
		res.ExitCode = c.exitCode()
	}
	return res, opened, nil
}

// waitStop waits for the first of: the wait line, the workload's exit, the
// timeout, or ctx's end (an error).
func waitStop(ctx context.Context, c *container, ready *readySignal, timeout time.Duration) (StopReason, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-ready.C:
		return StopReady, nil
	case <-c.exited:
		// runc returns only after its output is copied, so a wait line
		// printed just before exiting has fired already.
		select {
		case <-ready.C:
			return StopReady, nil
		default:
			return StopExit, nil
		}
	case <-timer.C:
		return StopTimeout, nil
	case <-ctx.Done():
		return "", fmt.Errorf("recording: %w", ctx.Err())
	}
}

// imageFiles turns the paths the kernel reported into the image's paths,
// keeping only regular files of the extracted image (not files the
// workload created) that the list format can hold.
func imageFiles(opened []string, sb *sandbox, logger *slog.Logger) []string {
	root, err := os.OpenRoot(sb.lower)
	if err != nil {
		logger.Warn("cannot open the extracted image; the trace is empty", "error", err)
		return nil
	}
	defer root.Close()
	var t []string
	seen := make(map[string]bool)
	for _, p := range opened {
		// Opens seen through this mount namespace name the overlay's mount
		// point; opens inside the container name its root.
		if rest, ok := strings.CutPrefix(p, sb.merged+"/"); ok {
			p = "/" + rest
		}
		if seen[p] || !isImageFile(root, p) {
			continue
		}
		seen[p] = true
		if !prefetchlist.Valid(p) {
			logger.Warn("skipping a path the list format cannot hold", "path", p)
			continue
		}
		t = append(t, p)
	}
	return t
}

func isImageFile(root *os.Root, p string) bool {
	rel := strings.TrimPrefix(p, "/")
	if !fs.ValidPath(rel) {
		return false
	}
	fi, err := root.Lstat(rel)
	return err == nil && fi.Mode().IsRegular()
}
