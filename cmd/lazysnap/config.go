package main

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/lazysnap/lazysnap/cache"
	lazyfs "github.com/lazysnap/lazysnap/fs"
	"github.com/lazysnap/lazysnap/fs/layer"
	"github.com/lazysnap/lazysnap/fs/remote"
	"github.com/lazysnap/lazysnap/snapshot"
	"github.com/pelletier/go-toml/v2"
)

// config is the daemon's TOML configuration. It is decoded here, in the
// command, and turned into options for each package; no package sees it.
// docs/config.md documents every field and its default.
type config struct {
	Root            string                `toml:"root"`
	Address         string                `toml:"address"`
	HostsDir        string                `toml:"hosts_dir"`
	MetricsAddress  string                `toml:"metrics_address"`
	LogLevel        string                `toml:"log_level"`
	FuseManager     bool                  `toml:"fuse_manager"`
	Handover        bool                  `toml:"handover"`
	MemoryLimit     int64                 `toml:"memory_limit_bytes"`
	WatchInterval   duration              `toml:"watch_interval"`
	Containerd      containerdConfig      `toml:"containerd"`
	Verify          verifyConfig          `toml:"verify"`
	Cache           cacheConfig           `toml:"cache"`
	Fetch           fetchConfig           `toml:"fetch"`
	Prefetch        prefetchConfig        `toml:"prefetch"`
	BackgroundFetch backgroundFetchConfig `toml:"background_fetch"`
	Trace           traceConfig           `toml:"trace"`
	CRIImageService criImageServiceConfig `toml:"cri_image_service"`
	Restore         restoreConfig         `toml:"restore"`
	Credentials     credentialsConfig     `toml:"credentials"`
}

// restoreConfig is how serve mounts remote layers again after a restart
// (of the node, or of serve with its fused gone).
type restoreConfig struct {
	Concurrency   int      `toml:"concurrency"`
	Timeout       duration `toml:"timeout"`
	RetryInterval duration `toml:"retry_interval"`
}

// credentialsConfig is what becomes of registry credentials from CRI pulls.
type credentialsConfig struct {
	Persist bool `toml:"persist"`
}

// containerdConfig is the containerd lazysnap serves: serve withdraws
// layers it found bad from containerd's metadata through its API.
type containerdConfig struct {
	Address     string `toml:"address"`
	Snapshotter string `toml:"snapshotter"`
}

type verifyConfig struct {
	DiffID bool `toml:"diff_id"`
}

type cacheConfig struct {
	MaxBytes int64 `toml:"max_bytes"`
}

type fetchConfig struct {
	MaxConcurrency  int      `toml:"max_concurrency"`
	MaxRequestBytes int64    `toml:"max_request_bytes"`
	ReadAheadBytes  int64    `toml:"read_ahead_bytes"`
	ReadTimeout     duration `toml:"read_timeout"`
	Libraries       bool     `toml:"libraries"`
}

type prefetchConfig struct {
	Enable      bool     `toml:"enable"`
	WaitTimeout duration `toml:"wait_timeout"`
	FromTrace   bool     `toml:"from_trace"`
}

type backgroundFetchConfig struct {
	Enable         bool     `toml:"enable"`
	BytesPerSecond int64    `toml:"bytes_per_second"`
	QuietPeriod    duration `toml:"quiet_period"`
	DuringReads    bool     `toml:"during_reads"`
	RequestBytes   int64    `toml:"request_bytes"`
	MinFreeCores   float64  `toml:"min_free_cores"`
	MaxYield       duration `toml:"max_yield"`
}

// criImageServiceConfig is the CRI image-service proxy the kubelet can use
// as its image endpoint, so pull credentials reach lazysnap.
type criImageServiceConfig struct {
	Address           string `toml:"address"`
	ContainerdAddress string `toml:"containerd_address"`
}

type traceConfig struct {
	Enable       bool `toml:"enable"`
	MaxFiles     int  `toml:"max_files"`
	FromRegistry bool `toml:"from_registry"`
}

// defaultConfig holds every default of the daemon in one place. A setting
// the daemon only hands on to one package reads that package's exported
// default, so the value is written once and the documentation (checked by
// TestDocumentedDefaults) shows what really runs.
func defaultConfig() config {
	return config{
		Root:           "/var/lib/lazysnap",
		Address:        "/run/lazysnap/lazysnap.sock",
		HostsDir:       "/etc/containerd/certs.d",
		MetricsAddress: "",
		LogLevel:       "info",
		FuseManager:    true,
		Handover:       true,
		MemoryLimit:    96 << 20,
		WatchInterval:  duration(5 * time.Second),
		Containerd:     containerdConfig{Address: "/run/containerd/containerd.sock", Snapshotter: "lazysnap"},
		Verify:         verifyConfig{DiffID: true},
		Cache:          cacheConfig{MaxBytes: cache.DefaultMaxBytes},
		Fetch: fetchConfig{
			MaxConcurrency:  remote.DefaultMaxConcurrency,
			MaxRequestBytes: layer.DefaultMaxRequestBytes,
			ReadAheadBytes:  layer.DefaultReadAheadBytes,
			ReadTimeout:     duration(layer.DefaultReadTimeout),
			Libraries:       true,
		},
		Prefetch: prefetchConfig{Enable: true, WaitTimeout: 0, FromTrace: true},
		BackgroundFetch: backgroundFetchConfig{
			Enable:         true,
			BytesPerSecond: 0,
			QuietPeriod:    duration(layer.DefaultQuietPeriod),
			RequestBytes:   layer.DefaultBackgroundRequestBytes,
			MinFreeCores:   layer.DefaultMinFreeCores,
			MaxYield:       duration(layer.DefaultMaxYield),
		},
		Trace:           traceConfig{Enable: true, MaxFiles: lazyfs.DefaultTraceMaxFiles, FromRegistry: true},
		CRIImageService: criImageServiceConfig{Address: "", ContainerdAddress: "/run/containerd/containerd.sock"},
		Restore: restoreConfig{
			Concurrency:   snapshot.DefaultRestoreConcurrency,
			Timeout:       duration(snapshot.DefaultRestoreTimeout),
			RetryInterval: duration(snapshot.DefaultRestoreRetry),
		},
		Credentials: credentialsConfig{Persist: false},
	}
}

// loadConfig returns the defaults overlaid with the file at path, if any.
// Unknown keys are errors: a misspelt setting must not be silently ignored.
func loadConfig(path string) (config, error) {
	cfg := defaultConfig()
	if path == "" {
		return cfg, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("reading config: %w", err)
	}
	dec := toml.NewDecoder(bytes.NewReader(b)).DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		var strict *toml.StrictMissingError
		if errors.As(err, &strict) {
			return cfg, fmt.Errorf("config %s: %s", path, strict.String())
		}
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, cfg.validate()
}

func (c config) validate() error {
	switch {
	case c.Root == "":
		return errors.New("config: root must be set")
	case c.Address == "":
		return errors.New("config: address must be set")
	case c.Fetch.MaxConcurrency < 1:
		return errors.New("config: fetch.max_concurrency must be at least 1")
	case c.Cache.MaxBytes < 0:
		return errors.New("config: cache.max_bytes must not be negative")
	case c.BackgroundFetch.QuietPeriod < 0 || c.BackgroundFetch.RequestBytes < 1:
		return errors.New("config: background_fetch.quiet_period must not be negative, background_fetch.request_bytes at least 1")
	case c.BackgroundFetch.MinFreeCores < 0 || c.BackgroundFetch.MaxYield < 0:
		return errors.New("config: background_fetch.min_free_cores and background_fetch.max_yield must not be negative")
	case c.BackgroundFetch.BytesPerSecond < 0:
		return errors.New("config: background_fetch.bytes_per_second must not be negative")
	case c.Prefetch.WaitTimeout < 0:
		return errors.New("config: prefetch.wait_timeout must not be negative")
	case c.Fetch.ReadTimeout <= 0:
		return errors.New("config: fetch.read_timeout must be positive")
	case c.WatchInterval <= 0:
		return errors.New("config: watch_interval must be positive")
	case c.Restore.Concurrency < 1:
		return errors.New("config: restore.concurrency must be at least 1")
	case c.Restore.Timeout <= 0 || c.Restore.RetryInterval <= 0:
		return errors.New("config: restore.timeout and restore.retry_interval must be positive")
	case c.Trace.MaxFiles < 1:
		return errors.New("config: trace.max_files must be at least 1")
	case c.CRIImageService.Address != "" && c.CRIImageService.ContainerdAddress == "":
		return errors.New("config: cri_image_service.containerd_address must be set when cri_image_service.address is")
	}
	_, err := c.slogLevel()
	return err
}

func (c config) slogLevel() (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return l, fmt.Errorf("config: log_level %q: %w", c.LogLevel, err)
	}
	return l, nil
}

func (c config) logger() (*slog.Logger, error) {
	l, err := c.slogLevel()
	if err != nil {
		return nil, err
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}

// duration is a time.Duration written as a Go duration string ("10s").
type duration time.Duration

func (d *duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = duration(v)
	return nil
}

func (d duration) MarshalText() ([]byte, error) {
	return []byte(time.Duration(d).String()), nil
}
