package fused

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestPprofEndpoint fetches the heap and goroutine profiles in their text
// form, which operators read with curl over the socket.
func TestPprofEndpoint(t *testing.T) {
	h := NewServer(&recordingFS{})
	for path, want := range map[string]string{
		"/debug/pprof/":                  "heap",
		"/debug/pprof/heap?debug=1":      "heap profile:",
		"/debug/pprof/goroutine?debug=1": "goroutine profile:",
		"/debug/pprof/cmdline":           "",
		"/debug/pprof/symbol":            "num_symbols",
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), want) {
			t.Errorf("GET %s = %d %.200q; want 200 containing %q", path, rec.Code, rec.Body.String(), want)
		}
	}
}
