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
//
// `ctr snapshots ls` is no probe: containerd answers it from its own
// metadata without calling the snapshotter. So first a Stat straight on
// the socket (serve is up), then a Prepare and Remove through containerd
// (containerd's connection, which reconnects with backoff, is up).
func (l *Lazysnap) probe() error {
	if err := l.probeSocket(); err != nil {
		return err
	}
	name := l.cd.Proxy.Name
	if _, err := l.cd.Ctr("--timeout", "10s", "snapshots", "--snapshotter", name, "prepare", readyProbeKey); err != nil {
		return err
	}
	_, err := l.cd.Ctr("--timeout", "10s", "snapshots", "--snapshotter", name, "rm", readyProbeKey)
	return err
}

// probeSocket asks serve to Stat a snapshot that does not exist: any
// answer but Unavailable (not listening yet) or a timeout means serve is up.
func (l *Lazysnap) probeSocket() error {
	conn, err := grpc.NewClient("unix://"+l.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("dialing %s: %w", l.Socket, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req := &snapshotsapi.StatSnapshotRequest{Snapshotter: l.cd.Proxy.Name, Key: readyProbeKey}
	_, err = snapshotsapi.NewSnapshotsClient(conn).Stat(ctx, req)
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		return fmt.Errorf("lazysnap serve on %s: %w", l.Socket, err)
	}
	return nil
}
