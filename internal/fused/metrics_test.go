package fused

import (
	"context"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

// metricsFS is a recordingFS that exports a fixed metrics page.
type metricsFS struct{ recordingFS }

func (*metricsFS) MetricsHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "lazysnap_fs_mounted_layers 2\n")
	})
}

// getMetrics fetches /metrics from a server of fsys.
func getMetrics(t *testing.T, fsys Interface) (int, string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "fused.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: NewServer(fsys)}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	resp, err := hc.Get("http://fused/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestMetricsEndpoint(t *testing.T) {
	if code, body := getMetrics(t, &metricsFS{}); code != 200 || !strings.Contains(body, "lazysnap_fs_mounted_layers 2") {
		t.Fatalf("GET /metrics = %d %q", code, body)
	}
	if code, _ := getMetrics(t, &recordingFS{}); code != http.StatusNotFound {
		t.Fatalf("GET /metrics without metrics = %d, want 404", code)
	}
}

// TestClientGathers: the client hands fused's metrics to a Prometheus
// registry's gatherers, as serve does to export them on metrics_address.
func TestClientGathers(t *testing.T) {
	c := serve(t, &metricsFS{})
	mfs, err := c.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) != 1 || mfs[0].GetName() != "lazysnap_fs_mounted_layers" || mfs[0].GetMetric()[0].GetUntyped().GetValue() != 2 {
		t.Fatalf("gathered %v", mfs)
	}
	if _, err := serve(t, &recordingFS{}).Gather(); err == nil {
		t.Fatal("gathering from a fused without metrics succeeded")
	}
}
