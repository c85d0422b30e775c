package testenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// ShapedRegistry is the real registry inside a network namespace, reached
// over a rate-limited veth link, with toxiproxy in the namespace adding
// latency to each request: a registry "far away" on one machine.
type ShapedRegistry struct {
	// Direct is the registry itself (rate-limited, no added latency): push
	// images here, ideally while the link is unshaped.
	Direct *Registry
	// Host is toxiproxy's "IP:PORT" in front of the registry: pull here.
	Host string
	// Link is the namespace and veth pair; Shape/Unshape toggle the limits.
	Link *Link
	// Toxiproxy is the API client of the namespace's toxiproxy-server.
	Toxiproxy *Toxiproxy
	// RateBits and Delay are the configured shaping.
	RateBits int64
	Delay    time.Duration
}

type shapeOptions struct {
	rateBits int64
	delay    time.Duration
}

// ShapeOption configures StartShapedRegistry.
type ShapeOption func(*shapeOptions)

func defaultShapeOptions() shapeOptions {
	return shapeOptions{rateBits: 200_000_000, delay: 20 * time.Millisecond}
}

// WithRate sets the link rate in bits per second, both directions. The
// default is 200 Mbit/s.
func WithRate(bitsPerSecond int64) ShapeOption {
	return func(o *shapeOptions) { o.rateBits = bitsPerSecond }
}

// WithDelay sets the latency added to each request. The default is 20ms.
func WithDelay(d time.Duration) ShapeOption {
	return func(o *shapeOptions) { o.delay = d }
}

// Ports inside the registry's namespace.
const (
	shapedRegistryPort  = 5000
	shapedProxyPort     = 5001
	shapedToxiproxyPort = 8474
)

// StartShapedRegistry starts the registry and toxiproxy in a new namespace
// and shapes the link. Everything is removed when the test ends.
func StartShapedRegistry(t testing.TB, opts ...ShapeOption) *ShapedRegistry {
	t.Helper()
	o := defaultShapeOptions()
	for _, opt := range opts {
		opt(&o)
	}
	link := NewLink(t)
	s := &ShapedRegistry{
		Link:      link,
		Host:      fmt.Sprintf("%s:%d", link.NSIP, shapedProxyPort),
		Toxiproxy: NewToxiproxy(fmt.Sprintf("%s:%d", link.NSIP, shapedToxiproxyPort)),
		RateBits:  o.rateBits,
		Delay:     o.delay,
	}
	s.Direct = startRegistryIn(t, link)
	s.startToxiproxy(t)
	if err := s.Shape(); err != nil {
		t.Fatal(err)
	}
	return s
}

// Shape applies the configured rate limits.
func (s *ShapedRegistry) Shape() error { return s.Link.Shape(s.RateBits) }

// Unshape lifts the rate limits; request latency stays.
func (s *ShapedRegistry) Unshape() error { return s.Link.Unshape() }

// Ref returns a pull reference through the latency proxy.
func (s *ShapedRegistry) Ref(repoTag string) string { return s.Host + "/" + repoTag }

func startRegistryIn(t testing.TB, link *Link) *Registry {
	t.Helper()
	dir := t.TempDir()
	host := fmt.Sprintf("%s:%d", link.NSIP, shapedRegistryPort)
	cfg := fmt.Sprintf("version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n"+
		"storage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: %s\n",
		filepath.Join(dir, "data"), host)
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	StartProcess(t, "registry", link.Command(Tool(t, "registry"), "serve", cfgPath))
	WaitTCP(t, host, 30*time.Second)
	return &Registry{Host: host, Dir: dir}
}

// startToxiproxy runs toxiproxy-server in the namespace, forwarding Host to
// the registry with the per-request latency toxic.
func (s *ShapedRegistry) startToxiproxy(t testing.TB) {
	t.Helper()
	StartProcess(t, "toxiproxy", s.Link.Command(Tool(t, "toxiproxy-server"),
		"-host", s.Link.NSIP, "-port", fmt.Sprint(shapedToxiproxyPort)))
	WaitTCP(t, s.Toxiproxy.API, 30*time.Second)
	ctx := context.Background()
	if err := s.Toxiproxy.CreateProxy(ctx, "registry", s.Host, s.Direct.Host); err != nil {
		t.Fatal(err)
	}
	if s.Delay > 0 {
		if err := s.Toxiproxy.AddToxic(ctx, "registry", LatencyToxic(s.Delay)); err != nil {
			t.Fatal(err)
		}
	}
}
