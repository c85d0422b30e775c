package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/contrib/snapshotservice"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/lazysnap/lazysnap/internal/criproxy"
	"github.com/lazysnap/lazysnap/internal/ctrsnap"
	"github.com/lazysnap/lazysnap/internal/fused"
	"github.com/lazysnap/lazysnap/internal/unixsock"
	"github.com/lazysnap/lazysnap/snapshot"
)

type serveFlags struct {
	config, address, root, metricsAddress string
	fuseManager                           bool
}

func newServeCommand() *cobra.Command {
	var f serveFlags
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the lazysnap snapshotter to containerd over a unix socket",
		Long: "serve runs containerd's snapshot service for lazysnap (configure it in containerd as a\n" +
			"proxy plugin). On SIGTERM it stops serving and leaves `lazysnap fused` and its mounts running.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(f.config)
			if err != nil {
				return err
			}
			f.apply(cmd, &cfg)
			if err := cfg.validate(); err != nil {
				return err
			}
			return runServe(cmd.Context(), cfg, f.config)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.config, "config", "", "TOML config file (see docs/config.md)")
	fl.StringVar(&f.address, "address", "", "unix socket to serve on (overrides the config's address)")
	fl.StringVar(&f.root, "root", "", "state directory (overrides the config's root)")
	fl.StringVar(&f.metricsAddress, "metrics-address", "", "host:port for /metrics (overrides the config's metrics_address)")
	fl.BoolVar(&f.fuseManager, "fuse-manager", true, "keep FUSE mounts in `lazysnap fused` (overrides the config's fuse_manager)")
	return cmd
}

// apply lets flags the user set win over the config file.
func (f serveFlags) apply(cmd *cobra.Command, cfg *config) {
	fl := cmd.Flags()
	if fl.Changed("address") {
		cfg.Address = f.address
	}
	if fl.Changed("root") {
		cfg.Root = f.root
	}
	if fl.Changed("metrics-address") {
		cfg.MetricsAddress = f.metricsAddress
	}
	if fl.Changed("fuse-manager") {
		cfg.FuseManager = f.fuseManager
	}
}

func runServe(ctx context.Context, cfg config, configPath string) error {
	log, err := cfg.logger()
	if err != nil {
		return err
	}
	if err := privateState(cfg.Root); err != nil {
		return err
	}
	fsys, closeFS := openFileSystem(ctx, cfg, configPath, log)
	defer closeFS()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	forget := ctrsnap.NewForgetter(cfg.Containerd.Address, cfg.Containerd.Snapshotter)
	sn, err := snapshot.New(ctx, cfg.Root, fsys, snapshot.WithLogger(log), snapshot.WithRegisterer(reg),
		snapshot.WithForgetter(forget.Forget),
		snapshot.WithRestore(cfg.Restore.Concurrency, time.Duration(cfg.Restore.Timeout), time.Duration(cfg.Restore.RetryInterval)))
	if err != nil {
		return err
	}
	defer sn.Close()
	proxy, err := newCRIProxy(cfg, fsys, log)
	if err != nil {
		return err
	}
	if proxy != nil {
		defer proxy.Close()
	}
	// The layers' metrics live where the mounts are (fused); serve exports
	// them beside its own, since Prometheus cannot scrape fused's socket.
	var gatherer prometheus.Gatherer = reg
	if g, ok := fsys.(prometheus.Gatherer); ok {
		gatherer = prometheus.Gatherers{reg, g}
	}
	workers := []func(context.Context) error{
		func(ctx context.Context) error { return watchLayers(ctx, sn, time.Duration(cfg.WatchInterval), log) },
	}
	switch v := fsys.(type) {
	case *fused.Client:
		workers = append(workers, func(ctx context.Context) error { return superviseFused(ctx, cfg, configPath, sn, nil, log) })
	case *heldFS:
		workers = append(workers, func(ctx context.Context) error { return superviseFused(ctx, cfg, configPath, sn, v, log) })
	}
	return serveGRPC(ctx, cfg, sn, proxy, gatherer, log, workers...)
}

// newCRIProxy returns the CRI image-service proxy when cri_image_service
// is configured, else nil. Pull credentials go to whatever mounts layers:
// fused (through its client) or package fs in this process. With neither,
// they go nowhere: every layer is then pulled normally by containerd, which
// has the credentials itself.
func newCRIProxy(cfg config, fsys snapshot.FileSystem, log *slog.Logger) (*criproxy.Proxy, error) {
	if cfg.CRIImageService.Address == "" {
		return nil, nil
	}
	opts := []criproxy.Option{criproxy.WithLogger(log)}
	if sink, ok := fsys.(criproxy.CredentialSink); ok {
		opts = append(opts, criproxy.WithCredentialSink(sink))
	}
	return criproxy.New(cfg.CRIImageService.ContainerdAddress, opts...)
}

// openFileSystem returns what mounts remote layers: a client of `lazysnap
// fused` or, with fuse_manager off, package fs in this process (its mounts
// then end with serve). When neither can start, serve still runs and every
// layer falls back to a normal pull, counted with reason "no-filesystem".
func openFileSystem(ctx context.Context, cfg config, configPath string, log *slog.Logger) (snapshot.FileSystem, func()) {
	if cfg.FuseManager {
		c, err := ensureFused(ctx, cfg, configPath, log)
		if err != nil {
			log.ErrorContext(ctx, "remote snapshots disabled: every layer is pulled", "error", err)
			return nil, func() {}
		}
		if cfg.Handover {
			return newHeldFS(ctx, c, fusedSocket(cfg.Root), log), func() {}
		}
		return c, func() {}
	}
	setMemoryLimit(cfg.MemoryLimit)
	fsys, err := newLayerFS(ctx, cfg, log)
	if err != nil {
		log.ErrorContext(ctx, "remote snapshots disabled: every layer is pulled", "error", err)
		return nil, func() {}
	}
	return fsys, func() {
		if err := fsys.Close(); err != nil {
			log.ErrorContext(ctx, "unmounting layers", "error", err)
		}
	}
}

// serveGRPC serves containerd's snapshot API (and /metrics when
// configured) until ctx is done. containerd's snapshot service turns the
// snapshotter's errdefs errors into gRPC status codes.
func serveGRPC(ctx context.Context, cfg config, sn *snapshot.Snapshotter, proxy *criproxy.Proxy, reg prometheus.Gatherer,
	log *slog.Logger, workers ...func(context.Context) error) error {
	l, err := listenUnix(ctx, cfg, cfg.Address)
	if err != nil {
		return err
	}
	// containerd and the kubelet run as root: no one else has business on
	// these sockets, whatever their mode.
	l = unixsock.TrustedOnly(l, log)
	var proxyListener net.Listener
	if proxy != nil {
		if proxyListener, err = listenUnix(ctx, cfg, cfg.CRIImageService.Address); err != nil {
			l.Close()
			return fmt.Errorf("cri image service: %w", err)
		}
		proxyListener = unixsock.TrustedOnly(proxyListener, log)
	}
	srv := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(srv, snapshotservice.FromSnapshotter(sn))
	var metrics *http.Server
	if cfg.MetricsAddress != "" {
		metrics = &http.Server{Addr: cfg.MetricsAddress, Handler: metricsHandler(reg), ReadHeaderTimeout: 10 * time.Second}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := srv.Serve(l); !errors.Is(err, grpc.ErrServerStopped) {
			return err
		}
		return nil
	})
	if metrics != nil {
		g.Go(func() error { return listenAndServe(metrics) })
	}
	if proxy != nil {
		g.Go(func() error { return proxy.Serve(gctx, proxyListener) })
	}
	for _, w := range workers {
		g.Go(func() error { return w(gctx) })
	}
	g.Go(func() error {
		<-gctx.Done()
		srv.GracefulStop()
		if metrics != nil {
			metrics.Close()
		}
		return nil
	})
	log.InfoContext(ctx, "serving", "address", cfg.Address, "root", cfg.Root, "metrics", cfg.MetricsAddress,
		"cri_image_service", cfg.CRIImageService.Address)
	return g.Wait()
}

// watchLayers, every interval until ctx is done, withdraws the layers the
// file system found bad from reuse and tries again to mount the layers a
// restart could not.
func watchLayers(ctx context.Context, sn *snapshot.Snapshotter, interval time.Duration, log *slog.Logger) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := sn.QuarantineBad(ctx); err != nil && ctx.Err() == nil {
			log.WarnContext(ctx, "withdrawing bad layers", "error", err)
		}
		sn.RetryRestore(ctx)
	}
}

// metricsHandler serves g; a gatherer that fails (fused restarting) leaves
// its metrics out of that scrape instead of failing it.
func metricsHandler(g prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	return mux
}

func listenAndServe(s *http.Server) error {
	l, err := net.Listen("tcp", s.Addr)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	if err := s.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics: %w", err)
	}
	return nil
}
