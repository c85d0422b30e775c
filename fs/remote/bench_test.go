package remote

import (
	"io"
	"testing"
)

// BenchmarkFetch reads 1 MiB ranges of a 32 MiB blob from the local
// registry, one after another.
func BenchmarkFetch(b *testing.B) {
	const size, chunk = 32 << 20, 1 << 20
	f := newFixture(b, size)
	blob, err := NewResolver(WithHostsDir("")).Resolve(b.Context(), f.reg.Ref(testRepo), f.digest)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(chunk)
	var off int64
	for b.Loop() {
		rc, err := blob.Fetch(b.Context(), off, chunk)
		if err != nil {
			b.Fatal(err)
		}
		if n, err := io.Copy(io.Discard, rc); err != nil || n != chunk {
			b.Fatalf("read %d bytes: %v", n, err)
		}
		rc.Close()
		off = (off + chunk) % size
	}
}
