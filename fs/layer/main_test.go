package layer

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine outlives them: every
// fetch, stream and read-ahead must end with its read or its layer.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
