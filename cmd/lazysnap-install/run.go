package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/spf13/cobra"

	"github.com/lazysnap/lazysnap/install"
)

// probeTimeout bounds one health check behind an HTTP probe; the kubelet's
// probe timeout should be longer.
const probeTimeout = 3 * time.Second

func newRunCommand() *cobra.Command {
	var (
		f               installFlags
		listen          string
		uninstallOnExit bool
	)
	cmd := &cobra.Command{
		Use:   "run --binary PATH",
		Short: "Install, then serve /healthz and /readyz on lazysnap's health until signalled (the DaemonSet's entrypoint)",
		Long: `run installs lazysnap (as "install" does) and stays up as the health reporter
of the DaemonSet pod. By default it leaves lazysnap installed when it stops:
a pod stops on every rollout, eviction or node drain, and uninstalling then
would restart containerd and remove the snapshotter running containers read
their files from. Remove lazysnap deliberately with "uninstall".`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts, err := f.options()
			if err != nil {
				return err
			}
			inst := install.New(opts...)
			rep, err := inst.Install(cmd.Context())
			if err != nil {
				return err
			}
			printReport("install", rep)
			if err := serveHealth(cmd.Context(), listen, f.health(f.healthGrace)); err != nil {
				return err
			}
			if !uninstallOnExit {
				return nil
			}
			// The run context is cancelled: give uninstall its own.
			ctx, cancel := context.WithTimeout(context.WithoutCancel(cmd.Context()), time.Minute)
			defer cancel()
			rep, err = inst.Uninstall(ctx)
			printReport("uninstall", rep)
			return err
		},
	}
	f.register(cmd.Flags())
	cmd.Flags().StringVar(&listen, "listen", ":8080", "address of the /healthz and /readyz endpoints")
	cmd.Flags().BoolVar(&uninstallOnExit, "uninstall-on-exit", false, "uninstall when signalled to stop (see above why this is off)")
	return cmd
}

// serveHealth answers the kubelet's probes until ctx ends. Both endpoints
// check lazysnap itself, serve and fused: readiness gates the node's
// rollout, and a failing liveness restarts the pod, whose install step
// starts lazysnap again. One checker serves both, so its grace period
// (serve restarting fused, the supervisor restarting serve) spans probes.
func serveHealth(ctx context.Context, listen string, health *install.Health) error {
	check := func(w http.ResponseWriter, r *http.Request) {
		cctx, cancel := context.WithTimeout(r.Context(), probeTimeout)
		defer cancel()
		if err := health.Check(cctx); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", check)
	mux.HandleFunc("GET /readyz", check)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, BaseContext: func(net.Listener) context.Context { return ctx }}
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listening for probes: %w", err)
	}
	slog.Info("serving health probes", "addr", l.Addr().String())
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving probes: %w", err)
	}
	return nil
}
