package fs_test

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	lfs "github.com/lazysnap/lazysnap/fs"
	"github.com/lazysnap/lazysnap/fs/sharedtrace"
	"github.com/lazysnap/lazysnap/fs/trace"
	"github.com/lazysnap/lazysnap/internal/testenv"
)

// TestSharedTracePrefetch: a node that never ran an image (no saved trace)
// prefetches at mount the files of the trace another node pushed to the
// image's repository, so its first reads of them send no request; with
// WithTraceFromRegistry(false) it does not.
func TestSharedTracePrefetch(t *testing.T) {
	testenv.RequireFUSE(t)
	registry := testenv.StartRegistry(t)
	proxy := startRangeProxy(t, registry.Host, 0)
	var es []tentry
	for i := range 40 {
		es = append(es, reg(fmt.Sprintf("lib/mod%02d", i), 20<<10, uint64(500+i)))
	}
	l := buildLayer(t, es)
	ref := proxy.Host + "/shared/app:v1"
	pushed, err := name.ParseReference(push(t, registry.Host, "shared/app:v1", l))
	if err != nil {
		t.Fatal(err)
	}
	subj, err := sharedtrace.Subject(pushed, nil)
	if err != nil {
		t.Fatal(err)
	}
	startup := []tentry{es[3], es[17], es[29], es[35]}
	var tr bytes.Buffer
	if err := trace.Write(&tr, ref, []string{"/" + startup[0].name, "/" + startup[1].name, "/" + startup[2].name, "/" + startup[3].name}); err != nil {
		t.Fatal(err)
	}
	if _, err := sharedtrace.Push(context.Background(), pushed.Context(), subj, tr.Bytes(), time.Now()); err != nil {
		t.Fatal(err)
	}
	lbls := maps.Clone(labels(ref, l))
	lbls[lfs.LabelManifestDigest] = subj.Digest.String()

	fresh := newFS(t, lfs.WithTraceDir(t.TempDir()), lfs.WithPrefetch(true))
	mp := t.TempDir()
	if err := fresh.Mount(context.Background(), mp, lbls); err != nil {
		t.Fatal(err)
	}
	if n := requestsAfterPrefetch(t, fresh, mp, proxy, startup...); n != 0 {
		t.Errorf("reading the %d files of the shared trace after the prefetch sent %d requests, want 0", len(startup), n)
	}

	off := newFS(t, lfs.WithTraceDir(t.TempDir()), lfs.WithPrefetch(true), lfs.WithTraceFromRegistry(false))
	mp = t.TempDir()
	if err := off.Mount(context.Background(), mp, lbls); err != nil {
		t.Fatal(err)
	}
	if n := requestsAfterPrefetch(t, off, mp, proxy, startup[0]); n == 0 {
		t.Errorf("with trace.from_registry off, a file of the shared trace was there before it was read")
	}
}

// TestSharedTraceNoneFound: with no trace in the registry, or a manifest
// digest the registry does not know, the mount succeeds at once and
// nothing is prefetched.
func TestSharedTraceNoneFound(t *testing.T) {
	testenv.RequireFUSE(t)
	registry := testenv.StartRegistry(t)
	proxy := startRangeProxy(t, registry.Host, 0)
	es := []tentry{reg("bin/app", 64<<10, 7), reg("lib/a", 64<<10, 8)}
	l := buildLayer(t, es)
	ref := push(t, proxy.Host, "none/app:v1", l)
	lbls := maps.Clone(labels(ref, l))
	lbls[lfs.LabelManifestDigest] = "sha256:0123456789012345678901234567890123456789012345678901234567890123"
	f := newFS(t, lfs.WithTraceDir(t.TempDir()), lfs.WithPrefetch(true))
	mp := t.TempDir()
	start := time.Now()
	if err := f.Mount(context.Background(), mp, lbls); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Mount took %v", d)
	}
	if n := requestsAfterPrefetch(t, f, mp, proxy, es[0]); n == 0 {
		t.Errorf("a file was prefetched with no trace anywhere")
	}
}
