package main

import (
	"context"
	"path/filepath"
	"testing"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/proxy"
	"github.com/containerd/errdefs"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// TestServe runs `lazysnap serve` in-process on a temp root and talks to it
// the way containerd does, through containerd's snapshot proxy client.
func TestServe(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "lazysnap.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--address", sock, "--root", filepath.Join(dir, "root"), "--fuse-manager=false"})
	}()

	// WaitForReady makes the first call wait for the socket instead of
	// failing while serve starts; the test's deadline bounds it.
	conn, err := grpc.NewClient("unix://"+sock,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.WaitForReady(true)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sn := proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), "lazysnap")

	mounts, err := sn.Prepare(ctx, "active", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(mounts) != 1 || mounts[0].Type != "bind" {
		t.Fatalf("mounts of a snapshot without parent: %+v", mounts)
	}
	if err := sn.Commit(ctx, "layer-1", "active"); err != nil {
		t.Fatal(err)
	}
	info, err := sn.Stat(ctx, "layer-1")
	if err != nil || info.Kind != snapshots.KindCommitted {
		t.Fatalf("Stat after Commit: %+v, %v", info, err)
	}
	if err := sn.Remove(ctx, "layer-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := sn.Stat(ctx, "layer-1"); !errdefs.IsNotFound(err) {
		t.Fatalf("Stat after Remove: %v, want ErrNotFound through gRPC", err)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
}
