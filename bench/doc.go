// Package bench is lazysnap's local start-up benchmark (`make bench`): how
// long an image takes from pull start to its workload being ready, with the
// overlayfs snapshotter (full pull) and with lazysnap (plain, optimized and
// zstd:chunked conversions), over a registry behind a shaped link.
//
// Everything runs under private directories with the real parts of
// internal/testenv: the distribution registry in a network namespace joined
// by a veth pair rate-limited with tbf, toxiproxy adding a delay to each
// request, a counting proxy in front of it, and per case a fresh containerd,
// runc and lazysnap (a cold node: no image, no cache). The clock starts at
// pull start, so daemon start-up is not counted.
//
// The benchmark itself is BenchmarkStartup in the package's tests, driven by
// `go test -bench`; see docs/bench.md.
package bench
