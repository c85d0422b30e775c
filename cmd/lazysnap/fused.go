package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	lazyfs "github.com/lazysnap/lazysnap/fs"
	"github.com/lazysnap/lazysnap/fs/remote"
	"github.com/lazysnap/lazysnap/internal/credstore"
	"github.com/lazysnap/lazysnap/internal/fused"
	"github.com/lazysnap/lazysnap/internal/fusedproc"
	"github.com/lazysnap/lazysnap/internal/inflate"
	"github.com/lazysnap/lazysnap/internal/nodecpu"
	"github.com/lazysnap/lazysnap/internal/unixsock"
	"github.com/lazysnap/lazysnap/snapshot"
)

// layerFS is what the daemon needs of package fs: the FileSystem contract,
// plus Close to unmount everything on exit.
type layerFS interface {
	fused.Interface
	io.Closer
}

// newLayerFS builds package fs's FS from the config: the config is turned
// into options here, in the command, so package fs never sees it.
func newLayerFS(_ context.Context, cfg config, log *slog.Logger) (layerFS, error) {
	// Credentials from CRI pulls (POST /credentials, or serve's own proxy
	// with fuse_manager off) win over the host's docker config.
	creds := openCredentials(cfg, log)
	resolver := remote.NewResolver(
		remote.WithKeychain(authn.NewMultiKeychain(creds, authn.DefaultKeychain)),
		remote.WithHostsDir(cfg.HostsDir),
		remote.WithMaxConcurrency(cfg.Fetch.MaxConcurrency),
		remote.WithLogger(log),
	)
	opts := []lazyfs.Option{
		lazyfs.WithResolver(resolver),
		lazyfs.WithCacheDir(filepath.Join(cfg.Root, "cache")),
		lazyfs.WithVerifiedDir(filepath.Join(cfg.Root, "verified")),
		lazyfs.WithSpoolDir(filepath.Join(cfg.Root, "spool")),
		lazyfs.WithTOCTailDir(filepath.Join(cfg.Root, "tocs")),
		lazyfs.WithVerifyDiffID(cfg.Verify.DiffID),
		lazyfs.WithCacheMaxBytes(cfg.Cache.MaxBytes),
		lazyfs.WithMaxRequestBytes(cfg.Fetch.MaxRequestBytes),
		lazyfs.WithReadAhead(cfg.Fetch.ReadAheadBytes),
		lazyfs.WithReadTimeout(time.Duration(cfg.Fetch.ReadTimeout)),
		lazyfs.WithLibraryPrefetch(cfg.Fetch.Libraries),
		lazyfs.WithPrefetch(cfg.Prefetch.Enable),
		lazyfs.WithPrefetchWait(time.Duration(cfg.Prefetch.WaitTimeout)),
		lazyfs.WithTracePrefetch(cfg.Prefetch.FromTrace),
		lazyfs.WithTraceFromRegistry(cfg.Trace.FromRegistry),
		lazyfs.WithBackgroundFetch(cfg.BackgroundFetch.Enable),
		lazyfs.WithBackgroundBytesPerSecond(cfg.BackgroundFetch.BytesPerSecond),
		lazyfs.WithBackgroundQuietPeriod(time.Duration(cfg.BackgroundFetch.QuietPeriod)),
		lazyfs.WithBackgroundDuringReads(cfg.BackgroundFetch.DuringReads),
		lazyfs.WithBackgroundRequestBytes(cfg.BackgroundFetch.RequestBytes),
		lazyfs.WithLogger(log),
	}
	if cfg.BackgroundFetch.MinFreeCores > 0 {
		if load, err := nodecpu.New(0); err != nil {
			log.Warn("background fetch will not yield to a busy node", "error", err)
		} else {
			opts = append(opts, lazyfs.WithBackgroundYield(load, cfg.BackgroundFetch.MinFreeCores, time.Duration(cfg.BackgroundFetch.MaxYield)))
		}
	}
	if cfg.Trace.Enable {
		opts = append(opts, lazyfs.WithTraceDir(traceDir(cfg.Root)), lazyfs.WithTraceMaxFiles(cfg.Trace.MaxFiles))
	}
	fsys, err := lazyfs.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("starting the layer file system: %w", err)
	}
	if !inflate.Available {
		log.Warn("built without libdeflate: eStargz layers decompress about 3x slower (build with make build or script/build-static.sh)")
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(fsys.Collector())
	return statsAdapter{FS: fsys, Gatherer: reg, metrics: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), creds: creds}, nil
}

// credentialsFile is where credentials.persist keeps the working
// credentials of CRI pulls: in the 0700 state root, itself 0600.
func credentialsFile(root string) string { return filepath.Join(root, "credentials.json") }

// openCredentials returns the credential store, with the credentials a
// previous fused persisted when credentials.persist is on, so private
// layers mount again after a reboot or a restart of fused. With it off, a
// file an earlier run with it on left is removed: turning the setting off
// takes the secrets off the disk. Neither failure stops fused: without
// the file, layers of private images wait for the kubelet's next pull.
func openCredentials(cfg config, log *slog.Logger) *credstore.Store {
	file := credentialsFile(cfg.Root)
	if !cfg.Credentials.Persist {
		if err := os.Remove(file); err == nil {
			log.Info("removed persisted registry credentials (credentials.persist is off)", "file", file)
		} else if !errors.Is(err, os.ErrNotExist) {
			log.Warn("removing persisted registry credentials", "file", file, "error", err)
		}
		return credstore.New()
	}
	creds := credstore.New(credstore.WithPersistFile(file))
	n, err := creds.Load()
	if err != nil {
		log.Warn("loading persisted registry credentials", "error", err)
	}
	log.Info("loaded persisted registry credentials", "repositories", n)
	return creds
}

// traceDir is where fused keeps the first-open trace of each image.
func traceDir(root string) string { return filepath.Join(root, "traces") }

// statsAdapter exposes the per-layer status of package fs to fused's /stats
// endpoint and its metrics to /metrics, and takes credentials for its
// resolver on /credentials.
type statsAdapter struct {
	*lazyfs.FS
	prometheus.Gatherer // the file system's metrics, for serve's metrics_address without fused
	metrics             http.Handler
	creds               *credstore.Store
}

func (a statsAdapter) SetCredentials(ctx context.Context, host, repository string, cfg authn.AuthConfig) error {
	return a.creds.SetCredentials(ctx, host, repository, cfg)
}

func (a statsAdapter) Stats(context.Context) (any, error) { return a.FS.Status(), nil }

func (a statsAdapter) MetricsHandler() http.Handler { return a.metrics }

func fusedSocket(root string) string { return filepath.Join(root, "fused.sock") }

func newFusedCommand() *cobra.Command {
	var configPath, socket, root string
	cmd := &cobra.Command{
		Use:   "fused",
		Short: "Hold lazysnap's FUSE mounts, so they outlive restarts of `lazysnap serve`",
		Long: "fused mounts layers for `lazysnap serve`, which starts it on demand. It keeps running when serve\n" +
			"stops or crashes; on SIGTERM or SIGINT it unmounts every layer and exits.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(configPath)
			if err != nil {
				return err
			}
			if cmd.Flags().Changed("root") {
				cfg.Root = root
			}
			if socket == "" {
				socket = fusedSocket(cfg.Root)
			}
			return runFused(cmd.Context(), cfg, socket)
		},
	}
	cmd.Flags().StringVar(&configPath, "config", "", "TOML config file (see docs/config.md)")
	cmd.Flags().StringVar(&socket, "socket", "", "unix socket to serve on (default ROOT/fused.sock)")
	cmd.Flags().StringVar(&root, "root", "", "state directory (overrides the config's root)")
	return cmd
}

// runFused serves the FUSE side until ctx is done, then unmounts
// everything: stopping fused is the way to take the mounts down.
func runFused(ctx context.Context, cfg config, socket string) error {
	log, err := cfg.logger()
	if err != nil {
		return err
	}
	setMemoryLimit(cfg.MemoryLimit)
	protectFromOOMKiller(log)
	if err := privateState(cfg.Root); err != nil {
		return err
	}
	l, err := listenUnix(ctx, cfg, socket)
	if err != nil {
		return err
	}
	fsys, err := newLayerFS(ctx, cfg, log)
	if err != nil {
		l.Close()
		return err
	}
	srv := fused.NewHTTPServer(fsys)
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(l) }()
	var handover *fused.HandoverServer
	if cfg.Handover {
		hs, hl, err := serveHandover(ctx, fsys, socket, log)
		if err != nil {
			srv.Close()
			fsys.Close()
			return err
		}
		defer hl.Close()
		handover = hs
		warnOldKernel(ctx, log)
	}
	log.InfoContext(ctx, "fused serving", "socket", socket, "handover", cfg.Handover, "version", version)
	select {
	case <-ctx.Done():
	case err = <-serveErr:
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	srv.Shutdown(shutdownCtx)
	if handover != nil && handover.Peers() > 0 {
		// The mounts live on in the connections serve holds; the next
		// fused resumes them. Closing them here would fail the reads in
		// flight, which the kernel sends again to the next fused instead.
		// With no serve connected (it stopped first: an uninstall, a
		// node shutdown) no one would: unmount as without handover.
		log.InfoContext(ctx, "fused stopping without unmounting: the next fused resumes the mounts")
		return ignoreClosed(err)
	}
	if cerr := fsys.Close(); cerr != nil {
		return errors.Join(err, fmt.Errorf("unmounting layers: %w", cerr))
	}
	return ignoreClosed(err)
}

func ignoreClosed(err error) error {
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// serveHandover serves fused's handover socket, beside its API socket.
func serveHandover(ctx context.Context, fsys layerFS, socket string, log *slog.Logger) (*fused.HandoverServer, io.Closer, error) {
	a, ok := fsys.(statsAdapter)
	if !ok {
		return nil, nil, fmt.Errorf("handover: the file system cannot hand mounts over")
	}
	l, err := fused.ListenHandover(handoverSocket(socket))
	if err != nil {
		return nil, nil, err
	}
	hs := fused.NewHandoverServer(handoverProvider{a.FS}, log)
	go func() {
		if err := hs.Serve(ctx, l); err != nil {
			log.ErrorContext(ctx, "handover socket", "error", err)
		}
	}()
	return hs, l, nil
}

// listenUnix listens on the unix socket path, 0600 whatever the umask
// (package unixsock). Its directory is made 0700 when lazysnap owns it:
// the state root, the default socket directory /run/lazysnap, or a
// directory it has to create. Any other existing directory, /run say, is
// left as it is.
func listenUnix(ctx context.Context, cfg config, path string) (net.Listener, error) {
	dir := filepath.Dir(path)
	own := dir == filepath.Clean(cfg.Root) || dir == filepath.Dir(defaultConfig().Address)
	return unixsock.Listen(ctx, path, unixsock.WithOwnDir(own))
}

// privateState creates the state root 0700 and makes it and the
// subdirectories serve and fused keep there (snapshots, cache, traces) 0700,
// even when something else made them (a DaemonSet's hostPath is 0755): they
// hold layer contents of private images and snapshot metadata. Other users
// need no path through them: containers see layers through overlayfs, which
// reaches its lower and upper directories with its mounter's credentials.
func privateState(root string) error {
	if err := os.MkdirAll(root, unixsock.DirMode); err != nil {
		return fmt.Errorf("creating state directory: %w", err)
	}
	for _, d := range []string{root, filepath.Join(root, "snapshots"), filepath.Join(root, "cache"), traceDir(root)} {
		if err := os.Chmod(d, unixsock.DirMode); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("making state directory private: %w", err)
		}
	}
	return nil
}

// ensureFused returns a client of the fused serving ROOT, starting
// `lazysnap fused` (this binary) when none answers.
func ensureFused(ctx context.Context, cfg config, configPath string, log *slog.Logger) (*fused.Client, error) {
	argv, err := fusedArgv(cfg, configPath)
	if err != nil {
		return nil, err
	}
	return fusedproc.Ensure(ctx, fusedSocket(cfg.Root), argv, fusedproc.WithLogFile(fusedLog(cfg.Root)), fusedproc.WithLogger(log))
}

// superviseFused starts fused again whenever it stops answering, then has
// it resume the mounts held (with handover on: held is not nil) and sn
// mount again the layers the dead fused held that were not resumed.
func superviseFused(ctx context.Context, cfg config, configPath string, sn *snapshot.Snapshotter, held *heldFS, log *slog.Logger) error {
	argv, err := fusedArgv(cfg, configPath)
	if err != nil {
		return err
	}
	remount := func(ctx context.Context) {
		if held != nil {
			held.resumeHeld(ctx)
		}
		if err := sn.RemountAll(ctx); err != nil {
			log.ErrorContext(ctx, "mounting layers again after fused restarted", "error", err)
		}
	}
	opts := []fusedproc.Option{fusedproc.WithLogFile(fusedLog(cfg.Root)), fusedproc.WithLogger(log)}
	if held != nil {
		opts = append(opts, fusedproc.WithDied(held.watch(ctx)))
	}
	return fusedproc.Supervise(ctx, fusedSocket(cfg.Root), argv, time.Duration(cfg.WatchInterval), remount, opts...)
}

// fusedArgv is the command that runs `lazysnap fused` (this binary) for ROOT.
func fusedArgv(cfg config, configPath string) ([]string, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("finding the lazysnap binary: %w", err)
	}
	argv := []string{exe, "fused", "--socket", fusedSocket(cfg.Root), "--root", cfg.Root}
	if configPath != "" {
		argv = append(argv, "--config", configPath)
	}
	return argv, nil
}

// fusedOOMScoreAdj keeps the kernel's OOM killer off fused, as container
// runtimes' units do for containerd (OOMScoreAdjust=-999): killing it
// breaks the reads of every container on a lazy layer, which frees far
// less memory than killing one of those containers would.
const fusedOOMScoreAdj = -999

// protectFromOOMKiller lowers fused's OOM score. Lowering it needs
// CAP_SYS_RESOURCE; without it fused runs on, with a warning.
func protectFromOOMKiller(log *slog.Logger) {
	err := os.WriteFile("/proc/self/oom_score_adj", []byte(fmt.Sprint(fusedOOMScoreAdj)), 0)
	if err != nil {
		log.Warn("fused's OOM score could not be lowered", "oom_score_adj", fusedOOMScoreAdj, "error", err)
	}
}

func fusedLog(root string) string { return filepath.Join(root, "fused.log") }

// setMemoryLimit gives the Go runtime a soft memory limit. Without one the
// collector lets the heap grow to twice its live size, so a daemon whose
// live heap is 80 MB sits at 160 MB of RSS. With it, the collector runs
// more often as the limit nears; the limit is soft, so a node with more
// layers than it allows for only pays with GC work, never with an error.
// An explicit GOMEMLIMIT in the environment wins.
func setMemoryLimit(n int64) {
	if n > 0 && os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(n)
	}
}
