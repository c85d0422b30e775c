// Package fused is the wire between `lazysnap serve` and the long-lived
// `lazysnap fused` process that owns the FUSE mounts, so that a restart or a
// crash of the snapshotter never drops a FUSE connection a container reads
// from. It is HTTP with JSON bodies over a unix socket:
//
//	POST /mount    {"mountpoint": "...", "labels": {...}}   204 or error
//	POST /check    {"mountpoint": "...", "labels": {...}}   204 or error
//	POST /unmount  {"mountpoint": "..."}                    204 or error
//	POST /credentials {"host": "...", "repository": "...", "auth": {...}}
//	               204 or error: registry credentials from a CRI pull (see
//	               credentials.go); kept in memory, never logged
//	GET  /stats    200 with the file system's stats as JSON
//	GET  /bad-layers  200 with {mountpoint: reason} of the layers found bad
//	GET  /metrics  200 with the file system's Prometheus metrics (text format)
//	GET  /healthz  200 "ok"
//	GET  /debug/pprof/...  the Go runtime's profiles (net/http/pprof), for
//	                        operators looking at fused's memory or CPU
//
// Only root (or the user fused runs as) is served: NewHTTPServer answers
// 403 to any other peer, whatever the socket's mode.
//
// Errors are {"error": "...", "kind": "not-found"}, kind naming the errdefs
// category, which the client turns back into an errdefs error.
package fused

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/pprof"

	"github.com/containerd/errdefs"

	"github.com/lazysnap/lazysnap/internal/unixsock"
)

// Interface is what the server serves; package fs's FS implements it.
type Interface interface {
	Mount(ctx context.Context, mountpoint string, labels map[string]string) error
	Check(ctx context.Context, mountpoint string, labels map[string]string) error
	Unmount(ctx context.Context, mountpoint string) error
}

// StatsProvider is implemented by file systems that report statistics on
// GET /stats. The value is encoded as JSON.
type StatsProvider interface {
	Stats(ctx context.Context) (any, error)
}

// BadLayerReporter is implemented by file systems that report the layers
// they found bad on GET /bad-layers.
type BadLayerReporter interface {
	BadLayers(ctx context.Context) (map[string]string, error)
}

// MetricsProvider is implemented by file systems that export Prometheus
// metrics on GET /metrics.
type MetricsProvider interface {
	MetricsHandler() http.Handler
}

// maxBody bounds request bodies; labels with the image's layer list are a
// few kilobytes.
const maxBody = 1 << 20

type mountRequest struct {
	Mountpoint string            `json:"mountpoint"`
	Labels     map[string]string `json:"labels,omitempty"`
}

type server struct{ fsys Interface }

// NewHTTPServer returns the server of fsys for a unix socket listener: it
// answers 403 to a peer that is not root (or fused's own user). The
// socket's 0600 mode keeps others out already; this check holds when that
// mode is loosened, and covers the credentials and profiles it serves.
func NewHTTPServer(fsys Interface) *http.Server {
	return &http.Server{Handler: trustedPeersOnly(NewServer(fsys)), ConnContext: unixsock.ConnContext}
}

// trustedPeersOnly refuses requests whose connection's peer is unknown or
// not unixsock.Trusted.
func trustedPeersOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		uid, ok := unixsock.PeerFromContext(r.Context())
		switch {
		case !ok:
			writeError(w, fmt.Errorf("unknown peer: %w", errdefs.ErrPermissionDenied))
		case !unixsock.Trusted(uid):
			writeError(w, fmt.Errorf("peer uid %d: %w", uid, errdefs.ErrPermissionDenied))
		default:
			h.ServeHTTP(w, r)
		}
	})
}

// NewServer returns the handler that serves fsys, with no peer check: use
// NewHTTPServer to serve it on a socket.
func NewServer(fsys Interface) http.Handler {
	s := server{fsys: fsys}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /mount", s.call(func(ctx context.Context, r mountRequest) error {
		return fsys.Mount(ctx, r.Mountpoint, r.Labels)
	}))
	mux.HandleFunc("POST /check", s.call(func(ctx context.Context, r mountRequest) error {
		return fsys.Check(ctx, r.Mountpoint, r.Labels)
	}))
	mux.HandleFunc("POST /unmount", s.call(func(ctx context.Context, r mountRequest) error {
		return fsys.Unmount(ctx, r.Mountpoint)
	}))
	mux.HandleFunc("POST /credentials", s.credentials)
	mux.HandleFunc("GET /stats", s.stats)
	mux.HandleFunc("GET /bad-layers", s.badLayers)
	if mp, ok := fsys.(MetricsProvider); ok {
		mux.Handle("GET /metrics", mp.MetricsHandler())
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	registerPprof(mux)
	return mux
}

// registerPprof serves the runtime profiles on mux. They are registered
// explicitly because importing net/http/pprof only registers them on
// http.DefaultServeMux, which fused does not serve. NewHTTPServer serves
// them to root only, like the rest of the API.
func registerPprof(mux *http.ServeMux) {
	mux.HandleFunc("GET /debug/pprof/", pprof.Index) // heap, goroutine, allocs... by name
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("POST /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
}

// call decodes a mountRequest, runs fn with the request's context (a
// client that goes away cancels the call) and writes the outcome.
func (s server) call(fn func(context.Context, mountRequest) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req mountRequest
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			writeError(w, fmt.Errorf("decoding request: %v: %w", err, errdefs.ErrInvalidArgument))
			return
		}
		if req.Mountpoint == "" {
			writeError(w, fmt.Errorf("no mountpoint: %w", errdefs.ErrInvalidArgument))
			return
		}
		if err := fn(r.Context(), req); err != nil {
			writeError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

func (s server) stats(w http.ResponseWriter, r *http.Request) {
	sp, ok := s.fsys.(StatsProvider)
	if !ok {
		writeError(w, fmt.Errorf("stats: %w", errdefs.ErrNotImplemented))
		return
	}
	st, err := sp.Stats(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(st)
}

func (s server) badLayers(w http.ResponseWriter, r *http.Request) {
	bad := map[string]string{}
	if rep, ok := s.fsys.(BadLayerReporter); ok {
		var err error
		if bad, err = rep.BadLayers(r.Context()); err != nil {
			writeError(w, err)
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(bad)
}

func writeError(w http.ResponseWriter, err error) {
	body, status := encodeError(err)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(body)
}
