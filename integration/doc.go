// Package integration runs lazysnap end to end: the real registry, a private
// containerd 2.x with runc, `lazysnap serve` as its proxy snapshotter and
// images converted by `lazyconv`. The tests need root; the lazy ones also need
// bin/lazysnap and bin/lazyconv (`make build`) and skip only when those are
// missing.
//
//	go test ./integration/
//	LAZYSNAP_TEST_DEBIAN=1 go test -run TestDebianImage ./integration/
//	go test -run '^$' -bench BenchmarkStartup -benchtime 1x ./integration/
package integration
