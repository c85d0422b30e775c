package testenv

import (
	"errors"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
	"testing"
	"time"
)

// Fault is what a FaultProxy does to the requests it gets.
type Fault int32

const (
	// FaultNone forwards every request.
	FaultNone Fault = iota
	// FaultUnavailable answers every request 503 Service Unavailable, as a
	// registry being restarted or overloaded does.
	FaultUnavailable
	// FaultStall holds every request, sending nothing, until the fault is
	// changed or the client gives up.
	FaultStall
)

func (f Fault) String() string {
	switch f {
	case FaultUnavailable:
		return "unavailable"
	case FaultStall:
		return "stall"
	default:
		return "none"
	}
}

// FaultProxy is a reverse proxy in front of a registry that injects faults
// on demand; a test pulls through Host and switches faults with Set.
type FaultProxy struct {
	// Host is "127.0.0.1:PORT".
	Host string

	fault atomic.Int32
}

// StartFaultProxy proxies to target ("HOST:PORT", plain HTTP) until the
// test ends, with no fault.
func StartFaultProxy(t testing.TB, target string) *FaultProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listening for fault proxy: %v", err)
	}
	p := &FaultProxy{Host: l.Addr().String()}
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: target})
	srv := &http.Server{Handler: p.wrap(rp)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Logf("fault proxy: %v", err)
		}
	}()
	t.Cleanup(func() {
		p.Set(FaultNone)
		srv.Close()
		<-done
	})
	return p
}

// Set switches the fault for requests from now on; stalled requests go on
// (or fail) as the new fault says.
func (p *FaultProxy) Set(f Fault) { p.fault.Store(int32(f)) }

func (p *FaultProxy) current() Fault { return Fault(p.fault.Load()) }

func (p *FaultProxy) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for p.current() == FaultStall {
			select {
			case <-r.Context().Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
		if p.current() == FaultUnavailable {
			http.Error(w, "injected fault", http.StatusServiceUnavailable)
			return
		}
		next.ServeHTTP(w, r)
	})
}
