package fused

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Client talks to a fused server over its unix socket. It implements the
// snapshotter's FileSystem contract (Mount, Check, Unmount).
type Client struct {
	http *http.Client
}

// NewClient returns a client for the server listening on socket. It does
// not connect; calls do, and fail with errdefs.ErrUnavailable when nothing
// answers.
func NewClient(socket string) *Client {
	dialer := &net.Dialer{}
	return &Client{http: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, "unix", socket)
		},
	}}}
}

// Mount asks the server to mount the layer the labels describe at mountpoint.
func (c *Client) Mount(ctx context.Context, mountpoint string, labels map[string]string) error {
	return c.post(ctx, "mount", mountRequest{Mountpoint: mountpoint, Labels: labels})
}

// Check asks the server whether the mount at mountpoint is alive.
func (c *Client) Check(ctx context.Context, mountpoint string, labels map[string]string) error {
	return c.post(ctx, "check", mountRequest{Mountpoint: mountpoint, Labels: labels})
}

// Unmount asks the server to unmount mountpoint and release its cache.
func (c *Client) Unmount(ctx context.Context, mountpoint string) error {
	return c.post(ctx, "unmount", mountRequest{Mountpoint: mountpoint})
}

// Stats returns the server's file system statistics as raw JSON.
func (c *Client) Stats(ctx context.Context) (json.RawMessage, error) {
	b, err := c.get(ctx, "stats")
	return json.RawMessage(b), err
}

// BadLayers returns, by mountpoint, why each layer the server found bad is
// bad.
func (c *Client) BadLayers(ctx context.Context) (map[string]string, error) {
	b, err := c.get(ctx, "bad-layers")
	if err != nil {
		return nil, err
	}
	var bad map[string]string
	if err := json.Unmarshal(b, &bad); err != nil {
		return nil, fmt.Errorf("decoding bad layers: %w", err)
	}
	return bad, nil
}

// Healthz returns nil when the server answers.
func (c *Client) Healthz(ctx context.Context) error {
	_, err := c.get(ctx, "healthz")
	return err
}

func (c *Client) post(ctx context.Context, op string, req any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("fused %s: %w", op, err)
	}
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://fused/"+op, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("fused %s: %w", op, err)
	}
	r.Header.Set("Content-Type", "application/json")
	_, err = c.do(op, r)
	return err
}

func (c *Client) get(ctx context.Context, op string) ([]byte, error) {
	r, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://fused/"+op, nil)
	if err != nil {
		return nil, fmt.Errorf("fused %s: %w", op, err)
	}
	return c.do(op, r)
}

func (c *Client) do(op string, r *http.Request) ([]byte, error) {
	resp, err := c.http.Do(r)
	if err != nil {
		if ctxErr := r.Context().Err(); ctxErr != nil {
			return nil, fmt.Errorf("fused %s: %w", op, ctxErr)
		}
		return nil, fmt.Errorf("fused %s: %v: %w", op, err, errdefs.ErrUnavailable)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, fmt.Errorf("fused %s: reading response: %v: %w", op, err, errdefs.ErrUnavailable)
	}
	if resp.StatusCode < 300 {
		return b, nil
	}
	var eb errorBody
	_ = json.Unmarshal(b, &eb) // a body that is not ours still yields an error below
	return nil, decodeError(op, eb, resp.StatusCode)
}

// Gather implements prometheus.Gatherer with the server's metrics (GET
// /metrics), so that serve can export fused's metrics on its own
// metrics_address: Prometheus cannot scrape a unix socket.
func (c *Client) Gather() ([]*dto.MetricFamily, error) {
	ctx, cancel := context.WithTimeout(context.Background(), gatherTimeout)
	defer cancel()
	b, err := c.get(ctx, "metrics")
	if err != nil {
		return nil, err
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	byName, err := p.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("parsing fused's metrics: %w", err)
	}
	out := make([]*dto.MetricFamily, 0, len(byName))
	for _, mf := range byName {
		out = append(out, mf)
	}
	slices.SortFunc(out, func(a, b *dto.MetricFamily) int { return strings.Compare(a.GetName(), b.GetName()) })
	return out, nil
}

// gatherTimeout bounds a scrape of fused's metrics.
const gatherTimeout = 5 * time.Second
