package install

import (
	"context"
	"fmt"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/core/snapshots/proxy"
	"github.com/containerd/errdefs"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// healthProbeKey is a snapshot key no one creates: asking for it makes the
// snapshotter look it up in its metadata store and answer "not found".
const healthProbeKey = "lazysnap-health-probe"

// CheckHealth reports whether lazysnap answers on socket the way containerd
// will ask it: through containerd's own snapshots proxy client, with a Stat
// that reaches its metadata store. (A Walk is no good: containerd's snapshot
// store answers "not found" on an empty store.) The probes of the DaemonSet and `lazysnap-install health` use
// it; ctx bounds how long it may take.
func CheckHealth(ctx context.Context, socket string) error {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("dialing lazysnap at %s: %w: %w", socket, errdefs.ErrUnavailable, err)
	}
	defer conn.Close()
	sn := proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), ProxyPluginName)
	_, err = sn.Stat(ctx, healthProbeKey)
	if err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("asking snapshots from lazysnap at %s: %w: %w", socket, errdefs.ErrUnavailable, err)
	}
	return nil
}
