package bench

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/lazysnap/lazysnap/internal/testenv"
)

// env is what every case shares: the shaped registry with each workload's
// image in each mode, and the counting proxy every pull goes through.
type env struct {
	shaped      *testenv.ShapedRegistry
	proxy       *testenv.CountingProxy
	lazysnapBin string
	footprint   *Footprint
	options
}

// startEnv starts the registry behind the shaped link and the counting
// proxy in front of its delay proxy.
func startEnv(tb testing.TB, o options, fp *Footprint) *env {
	tb.Helper()
	shaped := testenv.StartShapedRegistry(tb, testenv.WithRate(o.rateBits), testenv.WithDelay(o.delay))
	fp.addNamespace(shaped.Link.Namespace)
	fp.addDirs(shaped.Direct.Dir)
	fp.addMarkers(shaped.Link.NSIP)
	return &env{
		shaped:      shaped,
		proxy:       testenv.StartCountingProxy(tb, shaped.Host),
		lazysnapBin: testenv.LazysnapBin(),
		footprint:   fp,
		options:     o,
	}
}

// prepare pushes each workload's image and its conversions with the link
// unshaped (set-up is not what is measured), then shapes it. It returns
// the pull refs, refs[workload][mode], and each source image's size.
func (e *env) prepare(ctx context.Context, tb testing.TB) (map[string]map[Mode]string, map[string]int64) {
	tb.Helper()
	if err := e.shaped.Unshape(); err != nil {
		tb.Fatal(err)
	}
	conv, err := newConverter(e.cacheDir, testenv.LazyconvBin(), e.lazysnapBin, testenv.Tool(tb, "runc"),
		testenv.ToolsDir())
	if err != nil {
		tb.Fatal(err)
	}
	refs, sizes := map[string]map[Mode]string{}, map[string]int64{}
	for _, w := range e.workloads {
		e.logger.Info("building image", "workload", w.Name)
		src := w.Build(tb, e.shaped.Direct)
		sizes[w.Name] = src.CompressedSize
		refs[w.Name] = map[Mode]string{}
		for _, m := range e.modes {
			ref, err := e.publish(ctx, tb, conv, w, src, m)
			if err != nil {
				tb.Fatalf("preparing %s for %s: %v", w.Name, m, err)
			}
			refs[w.Name][m] = testenv.RefVia(ref, e.proxy.Host)
		}
	}
	if err := e.shaped.Shape(); err != nil {
		tb.Fatal(err)
	}
	return refs, sizes
}

// publish returns the registry ref of w's image in mode m, converting it
// (or taking the cached conversion) when the mode needs one. The traced
// mode's trace is recorded running the plain conversion, so that one is
// published first.
func (e *env) publish(ctx context.Context, tb testing.TB, conv *converter, w Workload, src *testenv.Image, m Mode) (string, error) {
	if m.conversion() == "" {
		return src.Ref, nil
	}
	if m == Shared {
		return e.publishShared(ctx, tb, conv, w, src)
	}
	var learn traceFunc
	if m.traced() {
		plain, err := e.publish(ctx, tb, conv, w, src, m.plainOf())
		if err != nil {
			return "", err
		}
		learn = func(ctx context.Context, path string) error {
			return e.recordTrace(ctx, tb, w, testenv.RefVia(plain, e.proxy.Host), path)
		}
	}
	switch m {
	case StargzOptimized:
		learn = func(ctx context.Context, path string) error {
			return e.stargzOptimize(ctx, tb, w, testenv.RefVia(src.Ref, e.proxy.Host), path)
		}
	case Soci:
		learn = func(ctx context.Context, path string) error {
			return e.sociConvert(ctx, tb, w, testenv.RefVia(src.Ref, e.proxy.Host), path)
		}
	}
	e.logger.Info("converting (or taking the cached conversion)", "workload", w.Name, "format", m.conversion())
	dst := e.shaped.Direct.Ref(fmt.Sprintf("bench-%s:%s", w.Name, safeTag(m.conversion())))
	if err := conv.publish(ctx, w, src, m, dst, learn); err != nil {
		return "", err
	}
	return dst, nil
}

// safeTag makes a format name usable as a tag ("zstd:chunked").
func safeTag(s string) string { return strings.ReplaceAll(s, ":", "-") }
