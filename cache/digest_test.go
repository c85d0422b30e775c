package cache

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
)

// slowValidate is validateDigest as it was before wellFormed: go-digest's
// Validate, then the algorithms the store keeps.
func slowValidate(d digest.Digest) bool {
	return d.Validate() == nil && (d.Algorithm() == digest.SHA256 || d.Algorithm() == digest.SHA512)
}

// TestValidateDigest: the fast check accepts exactly what go-digest and the
// store's algorithms accept, and what it refuses is ErrInvalidArgument.
func TestValidateDigest(t *testing.T) {
	t.Parallel()
	hex64, hex128 := strings.Repeat("0123456789abcdef", 4), strings.Repeat("0123456789abcdef", 8)
	for _, tc := range []struct {
		d  digest.Digest
		ok bool
	}{
		{digest.Digest("sha256:" + hex64), true},
		{digest.Digest("sha512:" + hex128), true},
		{digest.FromString("x"), true},
		{digest.Digest("sha256:" + strings.ToUpper(hex64)), false},
		{digest.Digest("sha256:" + hex64[:63]), false},
		{digest.Digest("sha256:" + hex64 + "0"), false},
		{digest.Digest("sha256:" + hex64[:63] + "g"), false},
		{digest.Digest("sha256:" + hex64[:63] + "/"), false},
		{digest.Digest("sha256:" + hex64[:63] + "\x00"), false},
		{digest.Digest("sha256:" + hex64[:63] + "\n"), false},
		{digest.Digest("sha256:" + hex64 + "\n"), false},
		{digest.Digest("sha256:../" + hex64[3:]), false},
		{digest.Digest("sha512:" + hex64), false},
		{digest.Digest("sha384:" + strings.Repeat("ab", 48)), false},
		{digest.Digest("md5:" + hex64[:32]), false},
		{digest.Digest(hex64), false},
		{digest.Digest("sha256"), false},
		{digest.Digest(":" + hex64), false},
		{"", false},
	} {
		err := validateDigest(tc.d)
		if (err == nil) != tc.ok {
			t.Errorf("validateDigest(%q) = %v, want ok %v", tc.d, err, tc.ok)
		}
		if err != nil && !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("validateDigest(%q) = %v, not ErrInvalidArgument", tc.d, err)
		}
		if slowValidate(tc.d) != tc.ok {
			t.Errorf("go-digest disagrees on %q: the table is wrong", tc.d)
		}
	}
}

// FuzzValidateDigest: wellFormed never accepts what go-digest refuses, and
// validateDigest agrees with go-digest on everything.
func FuzzValidateDigest(f *testing.F) {
	for _, s := range []string{"sha256:" + strings.Repeat("a", 64), "sha512:" + strings.Repeat("0", 128), "sha256:", "x:y", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d := digest.Digest(s)
		if wellFormed(d) && !slowValidate(d) {
			t.Fatalf("wellFormed accepts %q, go-digest refuses it", s)
		}
		if (validateDigest(d) == nil) != slowValidate(d) {
			t.Fatalf("validateDigest(%q) = %v, go-digest says %v", s, validateDigest(d), slowValidate(d))
		}
	})
}

// BenchmarkHold holds and drops the content digests of a big layer, as its
// Mount and unmount do: 40,000 of them.
func BenchmarkHold(b *testing.B) {
	s := openStore(b, b.TempDir())
	ds := make([]digest.Digest, 40_000)
	for i := range ds {
		var id [8]byte
		binary.LittleEndian.PutUint64(id[:], uint64(i))
		ds[i] = digest.FromBytes(id[:])
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Hold("layer", ds); err != nil {
			b.Fatal(err)
		}
		if err := s.Drop("layer"); err != nil {
			b.Fatal(err)
		}
	}
}
