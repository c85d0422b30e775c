package fused

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"reflect"
	"sync"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/lazysnap/lazysnap/internal/unixsock"
)

// recordingFS records what reached it and fails with a chosen error: it
// stands in for package fs to test the wire, not mounting.
type recordingFS struct {
	mu     sync.Mutex
	got    []mountRequest
	ops    []string
	failed error
}

func (f *recordingFS) record(op string, r mountRequest) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ops = append(f.ops, op)
	f.got = append(f.got, r)
	return f.failed
}

func (f *recordingFS) Mount(_ context.Context, mp string, l map[string]string) error {
	return f.record("mount", mountRequest{mp, l})
}

func (f *recordingFS) Check(_ context.Context, mp string, l map[string]string) error {
	return f.record("check", mountRequest{mp, l})
}

func (f *recordingFS) Unmount(_ context.Context, mp string) error {
	return f.record("unmount", mountRequest{Mountpoint: mp})
}

func (f *recordingFS) Stats(context.Context) (any, error) {
	return map[string]int{"mounts": 3}, nil
}

func serve(t *testing.T, fsys Interface) *Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "fused.sock")
	l, err := unixsock.Listen(context.Background(), sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := NewHTTPServer(fsys)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("server: %v", err)
		}
	})
	return NewClient(sock)
}

func TestRoundTrip(t *testing.T) {
	ctx := context.Background()
	fsys := &recordingFS{}
	c := serve(t, fsys)
	labels := map[string]string{"containerd.io/snapshot/cri.layer-digest": "sha256:abc"}

	if err := c.Healthz(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Mount(ctx, "/mnt/a", labels); err != nil {
		t.Fatal(err)
	}
	if err := c.Check(ctx, "/mnt/a", labels); err != nil {
		t.Fatal(err)
	}
	if err := c.Unmount(ctx, "/mnt/a"); err != nil {
		t.Fatal(err)
	}
	want := []mountRequest{{"/mnt/a", labels}, {"/mnt/a", labels}, {Mountpoint: "/mnt/a"}}
	if !reflect.DeepEqual(fsys.got, want) || !reflect.DeepEqual(fsys.ops, []string{"mount", "check", "unmount"}) {
		t.Fatalf("server saw %v %+v, want mount, check, unmount of %+v", fsys.ops, fsys.got, want)
	}
	raw, err := c.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var st map[string]int
	if err := json.Unmarshal(raw, &st); err != nil || st["mounts"] != 3 {
		t.Fatalf("stats: %s, %v", raw, err)
	}
}

func TestErrorCategories(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		err error
		is  func(error) bool
	}{
		{errdefs.ErrNotFound, errdefs.IsNotFound},
		{errdefs.ErrInvalidArgument, errdefs.IsInvalidArgument},
		{errdefs.ErrNotImplemented, errdefs.IsNotImplemented},
		{errdefs.ErrUnavailable, errdefs.IsUnavailable},
		{errdefs.ErrDataLoss, errdefs.IsDataLoss},
		{errdefs.ErrFailedPrecondition, errdefs.IsFailedPrecondition},
		{errdefs.ErrAlreadyExists, errdefs.IsAlreadyExists},
		{context.DeadlineExceeded, errdefs.IsDeadlineExceeded},
		// A TOC digest mismatch: verification wins over its other category.
		{fmt.Errorf("%w: %w", errdefs.ErrFailedPrecondition, errdefs.ErrDataLoss), errdefs.IsDataLoss},
	} {
		t.Run(tc.err.Error(), func(t *testing.T) {
			c := serve(t, &recordingFS{failed: fmt.Errorf("layer sha256:abc: %w", tc.err)})
			err := c.Mount(ctx, "/mnt/a", nil)
			if err == nil || !tc.is(err) {
				t.Fatalf("got %v, want an error of the category of %v", err, tc.err)
			}
		})
	}
	t.Run("unknown", func(t *testing.T) {
		c := serve(t, &recordingFS{failed: errors.New("boom")})
		err := c.Mount(ctx, "/mnt/a", nil)
		if err == nil || errdefs.IsNotFound(err) || errdefs.IsUnavailable(err) {
			t.Fatalf("got %v, want an uncategorised error", err)
		}
	})
}

func TestBadRequest(t *testing.T) {
	c := serve(t, &recordingFS{})
	if err := c.Mount(context.Background(), "", nil); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("mount without a mountpoint: %v, want ErrInvalidArgument", err)
	}
}

func TestStatsNotImplemented(t *testing.T) {
	c := serve(t, struct{ Interface }{&recordingFS{}})
	if _, err := c.Stats(context.Background()); !errdefs.IsNotImplemented(err) {
		t.Fatalf("stats of a file system without Stats: %v, want ErrNotImplemented", err)
	}
}

func TestServerDown(t *testing.T) {
	c := NewClient(filepath.Join(t.TempDir(), "nobody.sock"))
	if err := c.Healthz(context.Background()); !errdefs.IsUnavailable(err) {
		t.Fatalf("no server: %v, want ErrUnavailable", err)
	}
}
