package sharedtrace

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"

	"github.com/lazysnap/lazysnap/fs/trace"
	"github.com/lazysnap/lazysnap/internal/testenv"
)

// subject pushes a small image to a fresh registry and returns its
// reference and manifest descriptor.
func subject(t *testing.T) (name.Tag, v1.Descriptor) {
	t.Helper()
	reg := testenv.StartRegistry(t)
	ref, err := name.NewTag(reg.Ref("app:v1"))
	if err != nil {
		t.Fatal(err)
	}
	img, err := random.Image(64, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	desc, err := Subject(ref, nil)
	if err != nil {
		t.Fatal(err)
	}
	return ref, desc
}

func traceFile(t *testing.T, paths ...string) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := trace.Write(&b, "app", paths); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func push(t *testing.T, ref name.Tag, subj v1.Descriptor, content []byte, at time.Time) {
	t.Helper()
	if _, err := Push(context.Background(), ref.Context(), subj, content, at); err != nil {
		t.Fatal(err)
	}
}

func lookup(t *testing.T, ref name.Tag, subj v1.Descriptor, opts ...Option) ([]string, bool) {
	t.Helper()
	f := NewFinder(append([]Option{WithWait(20 * time.Second)}, opts...)...)
	p, ok := f.Start(ref.String(), subj.Digest.String()).Wait(context.Background())
	return p.Paths, ok
}

func TestPushThenFind(t *testing.T) {
	ref, subj := subject(t)
	if _, ok := lookup(t, ref, subj); ok {
		t.Fatal("found a trace before any was pushed")
	}
	push(t, ref, subj, traceFile(t, "/bin/sh", "/etc/app.conf"), time.Now())
	got, ok := lookup(t, ref, subj)
	if want := []string{"/bin/sh", "/etc/app.conf"}; !ok || !slices.Equal(got, want) {
		t.Fatalf("found %v (%v), want %v", got, ok, want)
	}
}

func TestNewestWins(t *testing.T) {
	ref, subj := subject(t)
	now := time.Now()
	push(t, ref, subj, traceFile(t, "/new"), now)
	push(t, ref, subj, traceFile(t, "/old"), now.Add(-time.Hour)) // pushed last, created first
	if got, _ := lookup(t, ref, subj); !slices.Equal(got, []string{"/new"}) {
		t.Fatalf("found %v, want the newest, /new", got)
	}
}

func TestOtherArtifactsIgnored(t *testing.T) {
	ref, subj := subject(t)
	other := artifact{subject: subj, artifactType: "application/vnd.example.sbom", created: time.Now(),
		blob: static.NewLayer(traceFile(t, "/sbom"), TraceMediaType)}
	if _, err := other.push(context.Background(), ref.Context()); err != nil {
		t.Fatal(err)
	}
	if got, ok := lookup(t, ref, subj); ok {
		t.Fatalf("found %v in an artifact of another type", got)
	}
	push(t, ref, subj, traceFile(t, "/ours"), time.Now().Add(-time.Hour))
	if got, _ := lookup(t, ref, subj); !slices.Equal(got, []string{"/ours"}) {
		t.Fatalf("found %v, want /ours", got)
	}
}

func TestHostileTracesIgnored(t *testing.T) {
	for _, tc := range []struct {
		name    string
		content []byte
		opts    []Option
	}{
		{"too big", traceFile(t, "/"+strings.Repeat("a", 200)), []Option{WithMaxBytes(100)}},
		{"garbage", []byte("/ok\n\x00\xff\xfe garbage\n../../etc/shadow\n"), nil},
		{"dot dot", []byte("/usr/../../etc/passwd\n"), nil},
		{"binary", bytes.Repeat([]byte{0, 1, 2, 0xff}, 1000), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ref, subj := subject(t)
			push(t, ref, subj, tc.content, time.Now())
			if got, ok := lookup(t, ref, subj, tc.opts...); ok {
				t.Fatalf("used %v from a hostile trace", got)
			}
		})
	}
}

// corrupting flips the bytes of every blob response: a registry (or a
// man in the middle) serving other bytes than the digest names.
type corrupting struct{ inner http.RoundTripper }

func (c corrupting) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := c.inner.RoundTrip(req)
	if err != nil || !strings.Contains(req.URL.Path, "/blobs/") || resp.StatusCode != http.StatusOK {
		return resp, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	for i := range b {
		b[i] ^= 0x20
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return resp, nil
}

func TestWrongDigestIgnored(t *testing.T) {
	ref, subj := subject(t)
	push(t, ref, subj, traceFile(t, "/bin/sh"), time.Now())
	if got, ok := lookup(t, ref, subj, WithTransport(corrupting{remote.DefaultTransport})); ok {
		t.Fatalf("used %v from a blob that does not match its digest", got)
	}
}

func TestRegistryDown(t *testing.T) {
	down, err := name.NewTag(fmt.Sprintf("127.0.0.1:%d/app:v1", testenv.FreePort(t)))
	if err != nil {
		t.Fatal(err)
	}
	f := NewFinder(WithWait(20 * time.Second))
	start := time.Now()
	if p, ok := f.Start(down.String(), "sha256:"+strings.Repeat("a", 64)).Wait(context.Background()); ok {
		t.Fatalf("found %v at a registry that is down", p.Paths)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Fatalf("a refused connection took %v to answer", d)
	}
}

// TestOneLookupPerImage has the layers of one image ask at once, and
// again: the registry is asked once, and "none" is remembered.
func TestOneLookupPerImage(t *testing.T) {
	ref, subj := subject(t)
	counter := &counting{inner: remote.DefaultTransport}
	f := NewFinder(WithWait(20*time.Second), WithTransport(counter))
	var ls []*Lookup
	for range 5 {
		ls = append(ls, f.Start(ref.String(), subj.Digest.String()))
	}
	for _, l := range ls {
		if _, ok := l.Wait(context.Background()); ok {
			t.Fatal("found a trace before any was pushed")
		}
	}
	first := counter.n()
	push(t, ref, subj, traceFile(t, "/bin/sh"), time.Now())
	if _, ok := f.Start(ref.String(), subj.Digest.String()).Wait(context.Background()); ok {
		t.Fatal("asked again before the remembered answer expired")
	}
	if n := counter.n(); n != first || n == 0 {
		t.Fatalf("%d requests for six lookups, want %d (one lookup's)", n, first)
	}
}

// counting counts the requests that reach the registry.
type counting struct {
	inner    http.RoundTripper
	requests atomic.Int64
}

func (c *counting) RoundTrip(req *http.Request) (*http.Response, error) {
	c.requests.Add(1)
	return c.inner.RoundTrip(req)
}

func (c *counting) n() int64 { return c.requests.Load() }

// TestWaitBounded: a registry that accepts connections and never answers
// holds a prefetch up to WithWait, no longer.
func TestWaitBounded(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	held := make(chan net.Conn, 64)
	t.Cleanup(func() {
		ln.Close()
		for len(held) > 0 {
			(<-held).Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			select {
			case held <- c:
			default:
				c.Close()
			}
		}
	}()
	f := NewFinder(WithWait(300*time.Millisecond), WithTimeout(2*time.Second))
	start := time.Now()
	if _, ok := f.Start(ln.Addr().String()+"/app:v1", "sha256:"+strings.Repeat("b", 64)).Wait(context.Background()); ok {
		t.Fatal("found a trace at a registry that never answers")
	}
	if d := time.Since(start); d < 300*time.Millisecond || d > 2*time.Second {
		t.Fatalf("Wait returned after %v, want about 300ms", d)
	}
}

// TestNoneExpires: once "none" has been kept long enough, the registry is
// asked again and a trace pushed meanwhile is found.
func TestNoneExpires(t *testing.T) {
	ref, subj := subject(t)
	f := NewFinder(WithWait(20*time.Second), WithKeep(time.Hour, 100*time.Millisecond))
	if _, ok := f.Start(ref.String(), subj.Digest.String()).Wait(context.Background()); ok {
		t.Fatal("found a trace before any was pushed")
	}
	push(t, ref, subj, traceFile(t, "/bin/sh"), time.Now())
	time.Sleep(150 * time.Millisecond)
	if p, ok := f.Start(ref.String(), subj.Digest.String()).Wait(context.Background()); !ok || !slices.Equal(p.Paths, []string{"/bin/sh"}) {
		t.Fatalf("after the none answer expired, found %v (%v)", p.Paths, ok)
	}
}
