package fs_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine outlives them: every
// mount's prefetch, background fetch, trace flusher and FUSE server must
// end with Unmount or Close. Idle keep-alive connections of the HTTP
// client are not leaks: the transport keeps them for the next request.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
	)
}
