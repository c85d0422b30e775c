package testenv

import (
	"io"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// readAll reads a layer's compressed blob and returns its length.
func readAll(t *testing.T, l v1.Layer) int64 {
	t.Helper()
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	n, err := io.Copy(io.Discard, rc)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
