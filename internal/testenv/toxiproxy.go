package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// Toxiproxy talks to a toxiproxy-server's HTTP API.
type Toxiproxy struct {
	// API is the server's "HOST:PORT".
	API    string
	client *http.Client
}

// Toxic is one toxiproxy toxic, as its API spells it.
type Toxic struct {
	Name string `json:"name,omitempty"`
	// Type is "latency", "bandwidth", "timeout", "reset_peer", "slicer"...
	Type string `json:"type"`
	// Stream is "upstream" (client to server) or "downstream".
	Stream     string         `json:"stream,omitempty"`
	Toxicity   float64        `json:"toxicity"`
	Attributes map[string]any `json:"attributes,omitempty"`
}

// NewToxiproxy returns a client of the API at api ("HOST:PORT").
func NewToxiproxy(api string) *Toxiproxy {
	return &Toxiproxy{API: api, client: &http.Client{Timeout: 10 * time.Second}}
}

// CreateProxy makes the server listen on listen and forward to upstream.
func (tp *Toxiproxy) CreateProxy(ctx context.Context, name, listen, upstream string) error {
	body := map[string]any{"name": name, "listen": listen, "upstream": upstream, "enabled": true}
	return tp.do(ctx, http.MethodPost, "/proxies", body)
}

// AddToxic adds toxic to proxy.
func (tp *Toxiproxy) AddToxic(ctx context.Context, proxy string, toxic Toxic) error {
	return tp.do(ctx, http.MethodPost, "/proxies/"+proxy+"/toxics", toxic)
}

// RemoveToxic removes the toxic named name from proxy.
func (tp *Toxiproxy) RemoveToxic(ctx context.Context, proxy, name string) error {
	return tp.do(ctx, http.MethodDelete, "/proxies/"+proxy+"/toxics/"+name, nil)
}

// LatencyToxic delays the data of each request (client to server) by d:
// every request pays d once, however large the response.
func LatencyToxic(d time.Duration) Toxic {
	return Toxic{Name: "request-latency", Type: "latency", Stream: "upstream", Toxicity: 1,
		Attributes: map[string]any{"latency": d.Milliseconds(), "jitter": 0}}
}

func (tp *Toxiproxy) do(ctx context.Context, method, path string, body any) error {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encoding toxiproxy request: %w", err)
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+tp.API+path, r)
	if err != nil {
		return fmt.Errorf("toxiproxy %s %s: %w", method, path, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := tp.client.Do(req)
	if err != nil {
		return fmt.Errorf("toxiproxy %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode >= 300 {
		return fmt.Errorf("toxiproxy %s %s: %s: %s", method, path, resp.Status, msg)
	}
	return nil
}
