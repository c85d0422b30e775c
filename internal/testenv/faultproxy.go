package testenv

import (
	"net/http"
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
	p := &FaultProxy{}
	p.Host = serveProxy(t, "fault proxy", target, p.wrap)
	// Runs before the server's cleanup: a stalled request lets go first.
	t.Cleanup(func() { p.Set(FaultNone) })
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
