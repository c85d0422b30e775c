// Package criproxytest starts what tests of registry credentials need: the
// real distribution registry requiring HTTP basic authentication (its
// htpasswd access controller). Test-only, like internal/testenv.
package criproxytest

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/lazysnap/lazysnap/internal/testenv"
)

// StartAuthRegistry starts a second registry process over the storage of
// plain (started with testenv.StartRegistry) that answers only requests
// carrying user and password. Images are pushed to plain, which needs no
// credentials (testenv pushes anonymously), and pulled from the returned
// registry. The registry serves plain HTTP: its htpasswd controller does not
// insist on TLS, and the test registries are plain HTTP throughout.
func StartAuthRegistry(t testing.TB, plain *testenv.Registry, user, password string) *testenv.Registry {
	t.Helper()
	dir := t.TempDir()
	// The lowest cost: the registry checks the hash on every request, and a
	// lazily mounted layer sends many.
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	htpasswd := filepath.Join(dir, "htpasswd")
	if err := os.WriteFile(htpasswd, []byte(user+":"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return testenv.StartRegistry(t, testenv.WithRegistryData(plain.Dir), testenv.WithRegistryHtpasswd(htpasswd))
}
