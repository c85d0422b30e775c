// Command containerd-stargz-grpc is the stargz snapshotter's daemon, built
// from the published service package of github.com/containerd/stargz-snapshotter
// (whose own cmd module the Go module proxy does not serve), so that `make
// bench` can run the peer side by side with lazysnap at a pinned version.
//
// It does what upstream's cmd/containerd-stargz-grpc does for a bench node:
// read the TOML config, build the snapshotter with
// service.NewStargzSnapshotterService, and serve containerd's snapshots API
// on a unix socket until SIGINT or SIGTERM. Upstream's extras (kubeconfig
// and CRI keychains, the FUSE manager, metrics) are left out: the bench's
// registry needs no credentials and each case starts a fresh daemon.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/contrib/snapshotservice"
	"github.com/containerd/log"
	"github.com/containerd/stargz-snapshotter/service"
	"github.com/pelletier/go-toml/v2"
	"google.golang.org/grpc"
)

// flags are the daemon's command-line settings, with upstream's names.
type flags struct {
	address  string
	config   string
	root     string
	logLevel string
}

func parseFlags() flags {
	var f flags
	flag.StringVar(&f.address, "address", "/run/containerd-stargz-grpc/containerd-stargz-grpc.sock",
		"address for the snapshotter's gRPC server")
	flag.StringVar(&f.config, "config", "", "path to the TOML configuration file (none: defaults)")
	flag.StringVar(&f.root, "root", "/var/lib/containerd-stargz-grpc", "root directory for this snapshotter")
	flag.StringVar(&f.logLevel, "log-level", "info", "logging level [trace, debug, info, warn, error]")
	flag.Parse()
	return f
}

func main() {
	if err := run(parseFlags()); err != nil {
		fmt.Fprintf(os.Stderr, "containerd-stargz-grpc: %v\n", err)
		os.Exit(1)
	}
}

func run(f flags) error {
	if err := log.SetLevel(f.logLevel); err != nil {
		return fmt.Errorf("setting log level: %w", err)
	}
	ctx := log.WithLogger(context.Background(), log.L)
	cfg, err := loadConfig(f.config)
	if err != nil {
		return err
	}
	sn, err := service.NewStargzSnapshotterService(ctx, f.root, cfg)
	if err != nil {
		return fmt.Errorf("creating the snapshotter: %w", err)
	}
	// Close unmounts the layers this daemon mounted, so a stopped daemon
	// leaves no FUSE mount behind.
	defer sn.Close()
	l, err := listen(f.address)
	if err != nil {
		return err
	}
	rpc := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(rpc, snapshotservice.FromSnapshotter(sn))
	served := make(chan error, 1)
	go func() { served <- rpc.Serve(l) }()
	return waitForSignal(rpc, served)
}

// loadConfig reads the TOML file at path into upstream's Config; an empty
// path means every setting at its default.
func loadConfig(path string) (*service.Config, error) {
	var cfg service.Config
	if path == "" {
		return &cfg, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	if err := toml.Unmarshal(b, &cfg); err != nil {
		return nil, fmt.Errorf("parsing config %s: %w", path, err)
	}
	return &cfg, nil
}

// listen removes a stale socket of a killed predecessor first, or the
// listen would fail with EADDRINUSE.
func listen(address string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(address), 0o700); err != nil {
		return nil, fmt.Errorf("creating socket dir: %w", err)
	}
	if err := os.Remove(address); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("removing stale socket: %w", err)
	}
	l, err := net.Listen("unix", address)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", address, err)
	}
	return l, nil
}

// waitForSignal serves until SIGINT or SIGTERM (the bench stops its daemon
// with SIGTERM), then stops the server so the deferred Close runs.
func waitForSignal(rpc *grpc.Server, served <-chan error) error {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case err := <-served:
		return fmt.Errorf("serving: %w", err)
	case <-sig:
		rpc.Stop()
		return nil
	}
}
