package testenv

import (
	"context"
	"fmt"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// readyProbeKey is the snapshot the readiness probe prepares and removes.
const readyProbeKey = "testenv-ready-probe"

// probe reports whether serve answers and containerd reaches it.
func (l *Lazysnap) probe() error { return probeProxySnapshotter(l.cd, l.Socket) }

// probeProxySnapshotter reports whether the daemon serving cd's proxy
// snapshotter at socket answers and containerd reaches it.
//
// `ctr snapshots ls` is no probe: containerd answers it from its own
// metadata without calling the snapshotter. So first a Stat straight on
// the socket (the daemon is up), then a Prepare and Remove through
// containerd (containerd's connection, which reconnects with backoff, is up).
func probeProxySnapshotter(cd *Containerd, socket string) error {
	if err := probeSocket(socket, cd.Proxy.Name); err != nil {
		return err
	}
	name := cd.Proxy.Name
	if _, err := cd.Ctr("--timeout", "10s", "snapshots", "--snapshotter", name, "prepare", readyProbeKey); err != nil {
		return err
	}
	_, err := cd.Ctr("--timeout", "10s", "snapshots", "--snapshotter", name, "rm", readyProbeKey)
	return err
}

// probeSocket asks the daemon to Stat a snapshot that does not exist: any
// answer but Unavailable (not listening yet) or a timeout means it is up.
func probeSocket(socket, snapshotter string) error {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("dialing %s: %w", socket, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req := &snapshotsapi.StatSnapshotRequest{Snapshotter: snapshotter, Key: readyProbeKey}
	_, err = snapshotsapi.NewSnapshotsClient(conn).Stat(ctx, req)
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		return fmt.Errorf("snapshotter on %s: %w", socket, err)
	}
	return nil
}
