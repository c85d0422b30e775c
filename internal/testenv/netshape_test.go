package testenv

import (
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// TestShapedRegistry pushes an image to the registry in its namespace,
// pulls it back through toxiproxy over the shaped link, and checks that the
// tbf qdiscs are in place with the configured rate and carried the bytes.
func TestShapedRegistry(t *testing.T) {
	RequireRoot(t)
	s := StartShapedRegistry(t)
	img := BuildImage(t, s.Direct, "shaped:1", BusyboxLayer(),
		LayerSpec{Files: GeneratedFiles("/data", 2, 2<<20, Random)})

	ref, err := name.ParseReference(s.Ref("shaped:1"), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	pulled, err := remote.Image(ref)
	if err != nil {
		t.Fatalf("pulling through toxiproxy: %v", err)
	}
	layers, err := pulled.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var read int64
	for _, l := range layers {
		read += readAll(t, l)
	}
	if d, _ := pulled.Digest(); d.String() != img.Digest || read != img.CompressedSize {
		t.Fatalf("pulled %s (%d layer bytes), pushed %s (%d)", d, read, img.Digest, img.CompressedSize)
	}
	for _, nsSide := range []bool{false, true} {
		assertTBF(t, s, nsSide, read)
	}
}

func assertTBF(t *testing.T, s *ShapedRegistry, nsSide bool, minBytes int64) {
	t.Helper()
	qs, err := s.Link.Qdiscs(nsSide)
	if err != nil {
		t.Fatal(err)
	}
	if len(qs) != 1 || qs[0].Kind != "tbf" || qs[0].Options.Rate != s.RateBits/8 {
		t.Fatalf("qdiscs (namespace side %v): %+v; want one tbf at %d bytes/s", nsSide, qs, s.RateBits/8)
	}
	// The namespace end sends the registry's responses: all blob bytes
	// crossed its tbf.
	if nsSide && qs[0].Bytes < minBytes {
		t.Errorf("tbf on the namespace end carried %d bytes; want at least %d", qs[0].Bytes, minBytes)
	}
}
